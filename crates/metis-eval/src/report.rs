//! Result reports: a Markdown table in the layout of the published results (one row per
//! benchmark, one column per model, "mean ± std" of the primary metric in percent), long-format
//! CSV, JSON, and a grouped bar chart (PNG or SVG) with ± std error bars.
//!
//! Benchmarks and models appear in the order they first occur in the rows, so callers control
//! the layout by ordering the rows. The chart is drawn through `metis-plot` (file format by
//! extension, embedded font, palette), which also draws the trainer's line charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use metis_plot::{render, FONT, PALETTE};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// One benchmark × model result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultRow {
    pub benchmark: String,
    pub model: String,
    /// Number of items scored.
    pub n_items: usize,
    /// Number of trials (repeats over the items).
    pub n_trials: usize,
    /// Responses whose answer could not be extracted (summed over trials).
    pub invalid: usize,
    /// Requests that failed after all retries (summed over trials).
    pub failed: usize,
    /// Name of the metric shown in the table and chart (a key of `metrics`).
    pub primary_metric: String,
    /// Every metric, summarised over trials; values are fractions (0.692 = 69.20 %).
    pub metrics: BTreeMap<String, Summary>,
}

impl ResultRow {
    fn primary(&self) -> Option<&Summary> {
        self.metrics.get(&self.primary_metric)
    }
}

/// Errors of writing a chart: those of `metis-plot`, which draws it.
pub type ReportError = metis_plot::PlotError;

/// Distinct values in order of first appearance.
fn ordered<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

fn find<'a>(rows: &'a [ResultRow], benchmark: &str, model: &str) -> Option<&'a ResultRow> {
    rows.iter()
        .find(|r| r.benchmark == benchmark && r.model == model)
}

fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

/// Markdown report: the main table (one row per benchmark, first column "Benchmark (metric)",
/// one column per model, cells "mean ± std" of the primary metric in percent with 2 decimals,
/// the best model of each row in bold when at least two models have a value; ties are all
/// bold), a one-line legend, then a smaller table of invalid / failed response counts. Missing
/// results show as "–".
pub fn markdown(rows: &[ResultRow]) -> String {
    let benchmarks = ordered(rows.iter().map(|r| r.benchmark.as_str()));
    let models = ordered(rows.iter().map(|r| r.model.as_str()));
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    let header = |out: &mut String, first: &str| {
        let _ = write!(out, "| {first} |");
        for m in &models {
            let _ = write!(out, " {} |", md_escape(m));
        }
        out.push_str("\n|:---|");
        for _ in &models {
            out.push_str("---:|");
        }
        out.push('\n');
    };

    header(&mut out, "Benchmark (metric)");
    for b in &benchmarks {
        let metric = rows
            .iter()
            .find(|r| r.benchmark == *b)
            .map(|r| r.primary_metric.as_str())
            .unwrap_or_default();
        let cells: Vec<Option<(String, String)>> = models
            .iter()
            .map(|m| {
                let s = find(rows, b, m)?.primary()?;
                if s.mean.is_nan() {
                    return None;
                }
                let std = if s.std.is_nan() {
                    "n/a".to_string()
                } else {
                    pct(s.std)
                };
                Some((pct(s.mean), std))
            })
            .collect();
        let best = cells
            .iter()
            .flatten()
            .filter_map(|(m, _)| m.parse::<f64>().ok())
            .fold(f64::NEG_INFINITY, f64::max);
        let bold = cells.iter().flatten().count() >= 2;
        let _ = write!(out, "| {} ({}) |", md_escape(b), md_escape(metric));
        for cell in &cells {
            match cell {
                None => out.push_str(" – |"),
                Some((m, s)) => {
                    let text = format!("{m} ± {s}");
                    if bold && m.parse::<f64>().ok() == Some(best) {
                        let _ = write!(out, " **{text}** |");
                    } else {
                        let _ = write!(out, " {text} |");
                    }
                }
            }
        }
        out.push('\n');
    }
    out.push_str(
        "\nMean ± std over trials of the primary metric, in percent; best model per benchmark \
         in bold.\n\n",
    );

    header(&mut out, "Invalid / failed");
    for b in &benchmarks {
        let _ = write!(out, "| {} |", md_escape(b));
        for m in &models {
            match find(rows, b, m) {
                Some(r) => {
                    let _ = write!(out, " {} / {} |", r.invalid, r.failed);
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}

/// Long-format CSV: one line per row and metric (metrics in name order), header
/// `benchmark,model,metric,mean,std,stderr,ci_low,ci_high,n_items,n_trials,invalid,failed`.
/// Values are fractions, printed with Rust's shortest round-trip formatting; `NaN` as "NaN".
pub fn csv(rows: &[ResultRow]) -> String {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let header = [
        "benchmark",
        "model",
        "metric",
        "mean",
        "std",
        "stderr",
        "ci_low",
        "ci_high",
        "n_items",
        "n_trials",
        "invalid",
        "failed",
    ];
    // Writing to a Vec cannot fail.
    let _ = w.write_record(header);
    for r in rows {
        for (metric, s) in &r.metrics {
            let _ = w.write_record([
                r.benchmark.clone(),
                r.model.clone(),
                metric.clone(),
                s.mean.to_string(),
                s.std.to_string(),
                s.stderr.to_string(),
                s.ci_low.to_string(),
                s.ci_high.to_string(),
                r.n_items.to_string(),
                r.n_trials.to_string(),
                r.invalid.to_string(),
                r.failed.to_string(),
            ]);
        }
    }
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

/// Pretty-printed JSON array of the rows (`NaN` summaries become `null` and read back as `NaN`).
pub fn json(rows: &[ResultRow]) -> String {
    serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".to_string())
}

const CHART_SIZE: (u32, u32) = (1200, 600);

/// Grouped bar chart of the primary metric (mean in percent) with ± std error bars:
/// benchmarks on the x axis, one colour per model with a legend. The format follows the
/// extension of `path`: `.png` (1200×600 bitmap, text rendered with the embedded DejaVu Sans)
/// or `.svg`. Parent directories are created.
pub fn chart(rows: &[ResultRow], path: &Path) -> Result<(), ReportError> {
    render(
        path,
        CHART_SIZE,
        |root| draw_chart(rows, root),
        |root| draw_chart(rows, root),
    )
}

/// X axis of the grouped bars: `[0, n)`, group `i` spans `[i, i + 1)`, ticks at the centres.
struct GroupAxis {
    n: usize,
}

impl Ranged for GroupAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let frac = value / self.n as f64;
        limit.0 + (frac * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        (0..self.n).map(|i| i as f64 + 0.5).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.n as f64
    }
}

/// The side of a legend colour swatch and the gap between legend entries, in pixels.
const LEGEND_SWATCH: i32 = 14;
const LEGEND_GAP: i32 = 24;

/// One bar: the benchmark and model indices, the mean and std in percent.
struct Bar {
    bench: usize,
    model: usize,
    mean: f64,
    std: f64,
}

/// One legend entry: the model index (its colour), name, and width in pixels.
type LegendEntry<'a> = (usize, &'a str, i32);

type GroupChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<GroupAxis, RangedCoordf64>>;

fn draw_err<DB: DrawingBackend>(e: DrawingAreaErrorKind<DB::ErrorType>) -> String {
    e.to_string()
}

fn draw_chart<DB: DrawingBackend>(
    rows: &[ResultRow],
    root: &DrawingArea<DB, Shift>,
) -> Result<(), String> {
    let benchmarks = ordered(rows.iter().map(|r| r.benchmark.as_str()));
    let models = ordered(rows.iter().map(|r| r.model.as_str()));
    root.fill(&WHITE).map_err(draw_err::<DB>)?;

    // Title, then a legend row (wrapping) above the plot.
    let y = draw_title(root)?;
    let y = draw_legend(root, &models, y)?;
    let (_, plot_area) = root.split_vertically(y + 4);

    let bars = bars(rows, &benchmarks, &models);
    let n_bench = benchmarks.len().max(1);
    let x_labels = benchmark_labels(rows, &benchmarks);
    let mut chart = draw_axes(&plot_area, n_bench, value_range(&bars), &x_labels)?;
    draw_bars(root, &mut chart, &plot_area, &bars, models.len(), n_bench)
}

/// Draws the centred title; returns the y at which the legend starts.
fn draw_title<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>) -> Result<i32, String> {
    let err = draw_err::<DB>;
    let title_font = TextStyle::from((FONT, 26).into_font());
    let (width, _) = root.dim_in_pixel();
    let title = "Primary metric by benchmark (mean ± std over trials)";
    let (tw, th) = root.estimate_text_size(title, &title_font).map_err(err)?;
    let y = 12i32;
    root.draw(&Text::new(
        title,
        ((width as i32 - tw as i32) / 2, y),
        title_font.color(&BLACK),
    ))
    .map_err(err)?;
    Ok(y + th as i32 + 14)
}

/// Draws the legend in centred lines from `y`; returns the y below it.
fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    models: &[&str],
    mut y: i32,
) -> Result<i32, String> {
    let legend_font = TextStyle::from((FONT, 16).into_font());
    let (width, _) = root.dim_in_pixel();
    let lines = legend_lines(root, models, &legend_font, width as i32 - 80)?;
    for line in lines.iter().filter(|l| !l.is_empty()) {
        draw_legend_line(root, line, &legend_font, width, y)?;
        y += 24;
    }
    Ok(y)
}

/// The legend entries of `models` wrapped into lines no wider than `max_line` pixels.
fn legend_lines<'a, DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    models: &[&'a str],
    legend_font: &TextStyle,
    max_line: i32,
) -> Result<Vec<Vec<LegendEntry<'a>>>, String> {
    let mut entries = Vec::new();
    for (i, m) in models.iter().enumerate() {
        let (w, _) = root
            .estimate_text_size(m, legend_font)
            .map_err(draw_err::<DB>)?;
        entries.push((i, *m, LEGEND_SWATCH + 6 + w as i32));
    }
    let mut lines: Vec<Vec<LegendEntry>> = vec![Vec::new()];
    let mut line_w = 0;
    for e in entries {
        let last = lines.last_mut().expect("non-empty");
        if !last.is_empty() && line_w + LEGEND_GAP + e.2 > max_line {
            lines.push(vec![e]);
            line_w = e.2;
        } else {
            line_w += if last.is_empty() {
                e.2
            } else {
                LEGEND_GAP + e.2
            };
            last.push(e);
        }
    }
    Ok(lines)
}

fn draw_legend_line<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    line: &[LegendEntry],
    legend_font: &TextStyle,
    width: u32,
    y: i32,
) -> Result<(), String> {
    let err = draw_err::<DB>;
    let (swatch, gap) = (LEGEND_SWATCH, LEGEND_GAP);
    let total: i32 = line.iter().map(|e| e.2).sum::<i32>() + gap * (line.len() as i32 - 1);
    let mut x = (width as i32 - total) / 2;
    for &(i, name, w) in line {
        let color = PALETTE[i % PALETTE.len()];
        root.draw(&Rectangle::new(
            [(x, y + 2), (x + swatch, y + 2 + swatch)],
            color.filled(),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            name.to_string(),
            (x + swatch + 6, y + 2 + swatch / 2),
            legend_font
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(err)?;
        x += w + gap;
    }
    Ok(())
}

/// The bars with a finite mean, benchmark by benchmark; a std that is not finite draws none.
fn bars(rows: &[ResultRow], benchmarks: &[&str], models: &[&str]) -> Vec<Bar> {
    benchmarks
        .iter()
        .enumerate()
        .flat_map(|(bi, b)| {
            models.iter().enumerate().filter_map(move |(mi, m)| {
                let s = find(rows, b, m)?.primary()?;
                s.mean.is_finite().then(|| {
                    let std = if s.std.is_finite() { s.std } else { 0.0 };
                    Bar {
                        bench: bi,
                        model: mi,
                        mean: 100.0 * s.mean,
                        std: 100.0 * std,
                    }
                })
            })
        })
        .collect()
}

/// The y range: 0 to 100 %, widened with a margin when a bar or error bar leaves it.
fn value_range(bars: &[Bar]) -> std::ops::Range<f64> {
    let top = bars.iter().map(|b| b.mean + b.std).fold(100.0f64, f64::max);
    let bottom = bars.iter().map(|b| b.mean - b.std).fold(0.0f64, f64::min);
    let y_max = if top > 100.0 { top * 1.05 } else { 100.0 };
    let y_min = if bottom < 0.0 { bottom * 1.05 } else { 0.0 };
    y_min..y_max
}

/// "benchmark (metric)" for each benchmark, the metric that of its first row.
fn benchmark_labels(rows: &[ResultRow], benchmarks: &[&str]) -> Vec<String> {
    benchmarks
        .iter()
        .map(|b| {
            let metric = rows
                .iter()
                .find(|r| r.benchmark == *b)
                .map(|r| r.primary_metric.as_str())
                .unwrap_or_default();
            format!("{b} ({metric})")
        })
        .collect()
}

/// Builds the chart's coordinates on `plot_area` and draws its axes and grid.
fn draw_axes<'a, DB: DrawingBackend>(
    plot_area: &'a DrawingArea<DB, Shift>,
    n_bench: usize,
    y_range: std::ops::Range<f64>,
    x_labels: &[String],
) -> Result<GroupChart<'a, DB>, String> {
    let err = draw_err::<DB>;
    let label_of = |v: &f64| -> String {
        let i = v.floor();
        if i >= 0.0 && (i as usize) < x_labels.len() {
            x_labels[i as usize].clone()
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(plot_area)
        .margin_left(10)
        .margin_right(20)
        .margin_bottom(10)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d(GroupAxis { n: n_bench }, y_range)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("Score (%)")
        .x_desc("Benchmark")
        .x_label_formatter(&label_of)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(220, 220, 220))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// Draws each bar, then its error bar and, where bars are wide enough, its value.
fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &mut GroupChart<DB>,
    plot_area: &DrawingArea<DB, Shift>,
    bars: &[Bar],
    n_models: usize,
    n_bench: usize,
) -> Result<(), String> {
    let err = draw_err::<DB>;
    let n_models = n_models.max(1) as f64;
    let group = 0.8;
    let bar_w = group / n_models;
    let bar_px = (plot_area.dim_in_pixel().0 as f64 - 90.0) / n_bench as f64 * bar_w;
    let value_font = TextStyle::from((FONT, 12).into_font());
    for bar in bars {
        let color = PALETTE[bar.model % PALETTE.len()];
        let x0 = bar.bench as f64 + (1.0 - group) / 2.0 + bar.model as f64 * bar_w;
        let x1 = x0 + bar_w * 0.92;
        let xc = (x0 + x1) / 2.0;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x1, bar.mean)],
                color.filled(),
            )))
            .map_err(err)?;
        if bar.std > 0.0 {
            draw_error_bar(root, chart, xc, bar, bar_px)?;
        }
        if bar_px >= 30.0 {
            draw_value_label(root, chart, xc, bar, &value_font)?;
        }
    }
    Ok(())
}

/// An error bar drawn in pixels: a vertical line with whiskers (no mean marker).
fn draw_error_bar<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &GroupChart<DB>,
    xc: f64,
    bar: &Bar,
    bar_px: f64,
) -> Result<(), String> {
    let half = ((bar_px * 0.18) as i32).clamp(3, 10);
    let (px, lo) = chart.backend_coord(&(xc, bar.mean - bar.std));
    let (_, hi) = chart.backend_coord(&(xc, bar.mean + bar.std));
    let style = BLACK.stroke_width(2);
    for path in [
        vec![(px, lo), (px, hi)],
        vec![(px - half, lo), (px + half, lo)],
        vec![(px - half, hi), (px + half, hi)],
    ] {
        root.draw(&PathElement::new(path, style))
            .map_err(draw_err::<DB>)?;
    }
    Ok(())
}

/// The mean, printed above the bar and its error bar.
fn draw_value_label<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &GroupChart<DB>,
    xc: f64,
    bar: &Bar,
    value_font: &TextStyle,
) -> Result<(), String> {
    let err = draw_err::<DB>;
    let text = format!("{:.1}", bar.mean);
    let (px, py) = chart.backend_coord(&(xc, bar.mean.max(0.0) + bar.std));
    let (w, h) = root.estimate_text_size(&text, value_font).map_err(err)?;
    // `backend_coord` is in absolute pixels, which is the root area's frame.
    root.draw(&Text::new(
        text,
        (px - w as i32 / 2, py - h as i32 - 4),
        value_font.color(&RGBColor(60, 60, 60)),
    ))
    .map_err(err)
}
