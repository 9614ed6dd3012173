//! `metis cvss`: bulk CVSS scoring. A bad vector is reported on its own line and the run goes
//! on; only usage errors end it with a non-zero status.

use std::io::{self, BufRead, BufWriter, Write};

use metis_verify::cvss::Vector;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Vectors to score; with none, vectors are read one per line from stdin.
    vectors: Vec<String>,
    /// Print one JSON object per input line.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Scored {
        vector: &'a str,
        version: String,
        base: f64,
        temporal: Option<f64>,
        environmental: Option<f64>,
        severity: String,
    },
    Failed {
        vector: &'a str,
        error: String,
    },
}

fn score(vector: &str) -> Line<'_> {
    match Vector::parse(vector) {
        Ok(v) => {
            let s = v.scores();
            Line::Scored {
                vector,
                version: v.version().to_string(),
                base: s.base,
                // Only the groups the vector itself gives (v3.x scores both for any vector).
                temporal: s.temporal.filter(|_| v.has_temporal_metrics()),
                environmental: s.environmental.filter(|_| v.has_environmental_metrics()),
                severity: v.severity().to_string(),
            }
        }
        Err(e) => Line::Failed {
            vector,
            error: e.to_string(),
        },
    }
}

fn human(line: &Line<'_>) -> String {
    let opt = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.1}"));
    match line {
        Line::Scored {
            vector,
            version,
            base,
            temporal,
            environmental,
            severity,
        } => format!(
            "{vector}\n  CVSS {version}  base {base:.1} ({severity})  temporal {}  environmental {}",
            opt(*temporal),
            opt(*environmental)
        ),
        Line::Failed { vector, error } => format!("{vector}\n  error: {error}"),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut emit = |raw: &str| -> io::Result<()> {
        let vector = raw.trim_end_matches(['\r', '\n']).trim();
        let line = score(vector);
        if args.json {
            // Serialising plain numbers and strings cannot fail.
            let text = serde_json::to_string(&line).unwrap_or_default();
            writeln!(out, "{text}")
        } else {
            writeln!(out, "{}", human(&line))
        }
    };
    if args.vectors.is_empty() {
        for line in io::stdin().lock().lines() {
            emit(&line?)?;
        }
    } else {
        for v in &args.vectors {
            emit(v)?;
        }
    }
    out.flush()?;
    Ok(())
}
