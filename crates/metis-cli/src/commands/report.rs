//! `metis report`: tables (Markdown in the report's layout, CSV, JSON) and a chart with error
//! bars from the results of one or more `metis eval` runs.

use std::path::PathBuf;

use anyhow::Context;
use metis_eval::report::{self, ResultRow};

#[derive(clap::Args)]
pub struct Args {
    /// results.json files written by `metis eval --out DIR` (or its --json lines).
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// Write results.{md,csv,json}, chart.png and chart.svg into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// What to print on stdout.
    #[arg(long, default_value = "md", value_parser = ["md", "csv", "json"])]
    format: String,
}

/// Reads rows from a JSON array file or a JSON-lines file.
fn read_rows(path: &PathBuf) -> anyhow::Result<Vec<ResultRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()));
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a result row", path.display(), i + 1))
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for p in &args.results {
        rows.extend(read_rows(p)?);
    }
    match args.format.as_str() {
        "csv" => print!("{}", report::csv(&rows)),
        "json" => println!("{}", report::json(&rows)),
        _ => println!("{}", report::markdown(&rows)),
    }
    if let Some(dir) = &args.out {
        super::eval::write_reports(&rows, dir)?;
        report::chart(&rows, &dir.join("chart.svg"))?;
        eprintln!(
            "wrote results.md, results.csv, results.json, chart.png, chart.svg in {}",
            dir.display()
        );
    }
    Ok(())
}
