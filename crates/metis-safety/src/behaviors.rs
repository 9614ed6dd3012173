//! HarmBench's text behaviours (`harmbench_behaviors_text_{all,test,val}.csv`, upstream
//! `centerforaisafety/HarmBench` `data/behavior_datasets/`) and the DirectRequest test case
//! built from each (`baselines/direct_request/direct_request.py`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use metis_eval::benchmarks::{self, BenchmarkError, DataFile, DataSource, RemoteSource, Transform};
use serde::{Deserialize, Serialize};

/// Where HarmBench's behaviour files are read from by name. No snapshot of upstream
/// `centerforaisafety/HarmBench` was reachable when this was pinned; the files are those of the
/// unmodified import in `busycalibrating/AdversariaLLM` (its first commit), pinned by commit and
/// by the SHA-256 of each file (see `shared/data/harmbench/SOURCES.md`).
pub const SOURCE: RemoteSource = RemoteSource::GitHub {
    repo: "busycalibrating/AdversariaLLM",
    commit: "a4b57364bc2b0785bd0e6f79eec4948e3991b8b0",
};

/// The columns HarmBench's text behaviour files have, in order.
pub const COLUMNS: [&str; 6] = [
    "Behavior",
    "FunctionalCategory",
    "SemanticCategory",
    "Tags",
    "ContextString",
    "BehaviorID",
];

/// Errors reading a behaviour file; each names the file and, where there is one, the line.
#[derive(Debug, thiserror::Error)]
pub enum BehaviorError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unknown behaviour file layout: the header is {found:?}, HarmBench's text behaviours have {expected:?}")]
    Layout {
        path: PathBuf,
        found: Vec<String>,
        expected: Vec<String>,
    },
    #[error("{path}:{line}: field {field}: {detail}")]
    Field {
        path: PathBuf,
        line: u64,
        field: &'static str,
        detail: String,
    },
    #[error("{path}:{line}: {detail}")]
    Csv {
        path: PathBuf,
        line: u64,
        detail: String,
    },
    #[error("{path}: no behaviours")]
    Empty { path: PathBuf },
    #[error(transparent)]
    Fetch(#[from] BenchmarkError),
}

/// HarmBench's functional categories of text behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Functional {
    /// A harmful request on its own.
    Standard,
    /// A request about a context passage given with it.
    Contextual,
    /// A request to reproduce copyrighted text, judged by MinHash, not by a classifier.
    Copyright,
}

impl Functional {
    pub const ALL: [Functional; 3] = [
        Functional::Standard,
        Functional::Contextual,
        Functional::Copyright,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Functional::Standard => "standard",
            Functional::Contextual => "contextual",
            Functional::Copyright => "copyright",
        }
    }
}

impl fmt::Display for Functional {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Functional {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Functional::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not standard, contextual or copyright"))
    }
}

/// Which copyright text a `hash_check` behaviour asks for: it sets the MinHash window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyrightKind {
    Book,
    Lyrics,
}

/// One behaviour (a row of the CSV).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Behavior {
    pub id: String,
    pub behavior: String,
    pub functional: Functional,
    pub semantic: String,
    pub tags: Vec<String>,
    /// The context passage of a contextual behaviour (`None` otherwise).
    pub context: Option<String>,
    /// 1-based line of the row in its file (rows can span lines).
    pub line: u64,
}

impl Behavior {
    /// The DirectRequest test case: the behaviour, after its context passage for contextual
    /// behaviours (`f"{context_str}\n\n---\n\n{behavior}"`).
    pub fn test_case(&self) -> String {
        match &self.context {
            Some(c) => format!("{c}\n\n---\n\n{}", self.behavior),
            None => self.behavior.clone(),
        }
    }

    /// Book or lyrics for a copyright behaviour (`None` for the others).
    pub fn copyright_kind(&self) -> Option<CopyrightKind> {
        if self.functional != Functional::Copyright {
            return None;
        }
        if self.tags.iter().any(|t| t == "book") {
            Some(CopyrightKind::Book)
        } else if self.tags.iter().any(|t| t == "lyrics") {
            Some(CopyrightKind::Lyrics)
        } else {
            None
        }
    }
}

/// HarmBench's splits of the 400 text behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// All 400 (the report's set).
    All,
    /// 320.
    Test,
    /// 80.
    Val,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::All => "all",
            Split::Test => "test",
            Split::Val => "val",
        }
    }

    /// The file name of the split in a HarmBench data directory.
    pub fn file_name(self) -> String {
        format!("harmbench_behaviors_text_{}.csv", self.as_str())
    }

    /// The split's file in the data layout, with its upstream path and pinned hash.
    pub fn data_file(self) -> &'static DataFile {
        const fn file(
            path: &'static str,
            remote_path: &'static str,
            sha256: &'static str,
        ) -> DataFile {
            DataFile {
                path,
                remote_path,
                transform: Transform::None,
                sha256,
            }
        }
        static FILES: [DataFile; 3] = [
            file(
                "harmbench/harmbench_behaviors_text_all.csv",
                "data/behavior_datasets/harmbench_behaviors_text_all.csv",
                "8d81accedd38eaaf8b760618622bb888417d1fd0c86eba65c427a16f1cbb4afc",
            ),
            file(
                "harmbench/harmbench_behaviors_text_test.csv",
                "data/behavior_datasets/harmbench_behaviors_text_test.csv",
                "75d257b3e7428c52eb7b0154318f455af3e01b09a3794b5e2f3d36054f3c0e29",
            ),
            file(
                "harmbench/harmbench_behaviors_text_val.csv",
                "data/behavior_datasets/harmbench_behaviors_text_val.csv",
                "7bfaaa5e2b9b95002c89e2d33c019f58e9e8496e2fc65d368f1eeb8179e69534",
            ),
        ];
        match self {
            Split::All => &FILES[0],
            Split::Test => &FILES[1],
            Split::Val => &FILES[2],
        }
    }
}

/// Reads a split from the data directory, or from the cache after downloading it from
/// [`SOURCE`] (pinned; a download with another hash is refused). Returns the behaviours, the
/// file read and notes on what was done (downloads, hash differences of local copies).
pub async fn load_split(
    split: Split,
    data: &DataSource,
) -> Result<(Vec<Behavior>, PathBuf, Vec<String>), BehaviorError> {
    let mut notes = Vec::new();
    let (path, text, _) =
        benchmarks::read_pinned_file("harmbench", &SOURCE, split.data_file(), data, &mut notes)
            .await?;
    let list = parse(&text, &path)?;
    Ok((list, path, notes))
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Split::All),
            "test" => Ok(Split::Test),
            "val" => Ok(Split::Val),
            _ => Err(format!("unknown split {s:?} (all, test, val)")),
        }
    }
}

/// Reads a HarmBench text behaviour CSV, checking its layout and every row.
pub fn load(path: &Path) -> Result<Vec<Behavior>, BehaviorError> {
    let text = std::fs::read_to_string(path).map_err(|source| BehaviorError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// [`load`] on text already read; `path` names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Behavior>, BehaviorError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    check_header(&mut reader, path)?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| BehaviorError::Csv {
            path: path.to_path_buf(),
            line: e.position().map_or(0, |p| p.line()),
            detail: e.to_string(),
        })?;
        let b = row(&record, path)?;
        if let Some(first) = seen.insert(b.id.clone(), b.line) {
            return Err(BehaviorError::Field {
                path: path.to_path_buf(),
                line: b.line,
                field: "BehaviorID",
                detail: format!("{:?} repeats the row of line {first}", b.id),
            });
        }
        out.push(b);
    }
    if out.is_empty() {
        return Err(BehaviorError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

fn check_header(reader: &mut csv::Reader<&[u8]>, path: &Path) -> Result<(), BehaviorError> {
    let header = reader.headers().map_err(|e| BehaviorError::Csv {
        path: path.to_path_buf(),
        line: 1,
        detail: e.to_string(),
    })?;
    let found: Vec<String> = header.iter().map(str::to_owned).collect();
    if found != COLUMNS {
        return Err(BehaviorError::Layout {
            path: path.to_path_buf(),
            found,
            expected: COLUMNS.iter().map(|s| s.to_string()).collect(),
        });
    }
    Ok(())
}

fn row(record: &csv::StringRecord, path: &Path) -> Result<Behavior, BehaviorError> {
    let line = record.position().map_or(0, |p| p.line());
    let field_err = |field: &'static str, detail: String| BehaviorError::Field {
        path: path.to_path_buf(),
        line,
        field,
        detail,
    };
    let get = |i: usize| record.get(i).unwrap_or("");
    let non_empty = |i: usize, field: &'static str| {
        let v = get(i);
        if v.trim().is_empty() {
            Err(field_err(field, "empty".into()))
        } else {
            Ok(v.to_owned())
        }
    };
    let functional: Functional = get(1)
        .parse()
        .map_err(|e| field_err("FunctionalCategory", e))?;
    let tags: Vec<String> = get(3)
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let context = Some(get(4).to_owned()).filter(|c| !c.is_empty());
    if functional == Functional::Contextual && context.is_none() {
        return Err(field_err(
            "ContextString",
            "a contextual behaviour needs its context".into(),
        ));
    }
    let b = Behavior {
        id: non_empty(5, "BehaviorID")?,
        behavior: non_empty(0, "Behavior")?,
        functional,
        semantic: non_empty(2, "SemanticCategory")?,
        tags,
        context,
        line,
    };
    if functional == Functional::Copyright && b.copyright_kind().is_none() {
        return Err(field_err(
            "Tags",
            format!(
                "a copyright behaviour is tagged book or lyrics (with hash_check), got {:?}",
                get(3)
            ),
        ));
    }
    Ok(b)
}
