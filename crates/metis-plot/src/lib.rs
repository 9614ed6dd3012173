//! Charts shared by the benchmark reports (`metis-eval`, `metis-safety`) and the trainer's
//! curves (`metis-train`), without either pulling in the other.
//!
//! - [`render`] draws into a `.png` (bitmap) or `.svg` file chosen by extension, creating the
//!   parent directories, with the embedded DejaVu Sans registered as [`FONT`] so that text
//!   renders the same on every machine; a report's own chart (eval's grouped bars) is a
//!   drawing function handed to it.
//! - [`line_chart`] draws [`LinePanel`]s (each a title, a y label and its [`Curve`]s) stacked
//!   vertically over a shared x axis: training loss, learning rate, rewards against steps.
//! - [`PALETTE`] (Tableau 10) colours series alike across charts.
//!
//! Failures are [`PlotError`]s naming the file.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

/// Font family name under which the embedded DejaVu Sans is registered.
pub const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER_FONT: Once = Once::new();

/// Tableau 10 palette.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];

/// Errors of drawing a chart file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("chart {path}: unsupported extension (use .png or .svg)")]
    UnsupportedExtension { path: String },
    #[error("chart {path}: cannot create directory: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("chart {path}: {message}")]
    Draw { path: String, message: String },
}

fn register_font() {
    REGISTER_FONT.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_err() {
            tracing::error!("embedded DejaVuSans.ttf could not be parsed; charts will lack text");
        }
    });
}

/// Draws into `path` as PNG or SVG (by extension) with the embedded font, creating parent
/// directories; `png` and `svg` are the same drawing for the two backends (a drawing function
/// generic over [`DrawingBackend`] passed twice).
pub fn render(
    path: &Path,
    size: (u32, u32),
    png: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
    svg: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    let display = path.display().to_string();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    if !matches!(ext.as_deref(), Some("png") | Some("svg")) {
        return Err(PlotError::UnsupportedExtension { path: display });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| PlotError::Io {
            path: display.clone(),
            source,
        })?;
    }
    register_font();
    let result = if ext.as_deref() == Some("png") {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        png(&root).and_then(|()| root.present().map_err(|e| e.to_string()))
    } else {
        let root = SVGBackend::new(path, size).into_drawing_area();
        svg(&root).and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    result.map_err(|message| PlotError::Draw {
        path: display,
        message,
    })
}

/// One line of a [`LinePanel`]: `(x, y)` points in x order. Non-finite y values are skipped.
#[derive(Clone, Debug, Default)]
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel of a [`line_chart`]: a title, a y axis label and its lines.
#[derive(Clone, Debug, Default)]
pub struct LinePanel {
    pub title: String,
    pub y_label: String,
    pub curves: Vec<Curve>,
}

/// Pixel size of one panel of a [`line_chart`].
pub const LINE_PANEL_SIZE: (u32, u32) = (1200, 420);

/// Line charts (e.g. training loss and learning rate vs step): the panels stacked vertically,
/// each with its own y axis, sharing `x_label`; a legend when a panel has more than one line.
/// The format follows the extension of `path`: `.png` (1200 × 420 per panel, text rendered
/// with the embedded DejaVu Sans) or `.svg`. Parent directories are created.
pub fn line_chart(panels: &[LinePanel], x_label: &str, path: &Path) -> Result<(), PlotError> {
    let size = (
        LINE_PANEL_SIZE.0,
        LINE_PANEL_SIZE.1 * panels.len().max(1) as u32,
    );
    render(
        path,
        size,
        |root| draw_lines(panels, x_label, root),
        |root| draw_lines(panels, x_label, root),
    )
}

/// `(lo, hi)` padded by 5 % (or ±1 / ±|v|·5 % for a single value).
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= 0.0 {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.05 };
        return (lo - d, hi + d);
    }
    (lo - span * 0.05, hi + span * 0.05)
}

/// Axis label: plain for moderate magnitudes, scientific otherwise (learning rates).
fn axis_number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if !(1e-2..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn draw_lines<DB: DrawingBackend>(
    panels: &[LinePanel],
    x_label: &str,
    root: &DrawingArea<DB, Shift>,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (panel, area) in panels.iter().zip(&areas) {
        let finite = |s: &Curve| -> Vec<(f64, f64)> {
            s.points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        };
        let lines: Vec<(&str, Vec<(f64, f64)>)> = panel
            .curves
            .iter()
            .map(|s| (s.name.as_str(), finite(s)))
            .collect();
        let (x0, x1) = padded_range(lines.iter().flat_map(|l| l.1.iter().map(|p| p.0)));
        let (y0, y1) = padded_range(lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)));
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, (FONT, 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(panel.y_label.as_str())
            .x_label_formatter(&|v| axis_number(*v))
            .y_label_formatter(&|v| axis_number(*v))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(err)?;
        for (i, (name, points)) in lines.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let series = chart
                .draw_series(plotters::series::LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(err)?;
            if lines.len() > 1 {
                series.label(name.to_string()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            }
        }
        if lines.len() > 1 {
            chart
                .configure_series_labels()
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .draw()
                .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_padded_and_degenerate_ones_widened() {
        assert_eq!(padded_range([0.0, 10.0].into_iter()), (-0.5, 10.5));
        assert_eq!(padded_range([4.0].into_iter()), (3.8, 4.2));
        assert_eq!(padded_range([0.0, 0.0].into_iter()), (-1.0, 1.0));
        assert_eq!(padded_range(std::iter::empty()), (0.0, 1.0));
    }

    #[test]
    fn axis_numbers_switch_to_scientific_for_learning_rates() {
        assert_eq!(axis_number(0.0), "0");
        assert_eq!(axis_number(2e-5), "2.0e-5");
        assert_eq!(axis_number(250.0), "250");
        assert_eq!(axis_number(0.125), "0.125");
        assert_eq!(axis_number(1.5), "1.5");
    }
}
