//! `line_chart` end to end: the files it writes (PNG size from the header, SVG text), the
//! directories it creates, and the errors it names the file in.

use metis_plot::{line_chart, Curve, LinePanel, PlotError, LINE_PANEL_SIZE};

fn panels() -> Vec<LinePanel> {
    vec![
        LinePanel {
            title: "Training loss".into(),
            y_label: "loss".into(),
            curves: vec![
                Curve {
                    name: "train".into(),
                    points: vec![(1.0, 2.5), (2.0, 1.75), (3.0, f64::NAN), (4.0, 1.0)],
                },
                Curve {
                    name: "eval".into(),
                    points: vec![(2.0, 2.0), (4.0, 1.5)],
                },
            ],
        },
        LinePanel {
            title: "Learning rate".into(),
            y_label: "rate".into(),
            curves: vec![Curve {
                name: "lr".into(),
                points: vec![(1.0, 1e-5), (4.0, 2e-5)],
            }],
        },
    ]
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// Whether the SVG has a text element reading exactly `text` (plotters writes the text on a
/// line of its own).
fn has_text(svg: &str, text: &str) -> bool {
    svg.contains(&format!(">\n{text}\n</text>"))
}

#[test]
fn png_has_one_panel_height_per_panel_and_dirs_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/curves.png");
    line_chart(&panels(), "step", &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(png_size(&bytes), (LINE_PANEL_SIZE.0, 2 * LINE_PANEL_SIZE.1));
}

#[test]
fn svg_carries_titles_axis_labels_and_a_legend_only_for_several_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.SVG");
    line_chart(&panels(), "optimizer step", &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    for text in ["Training loss", "Learning rate", "optimizer step", "loss"] {
        assert!(svg.contains(text), "{text} missing");
    }
    // The two-line panel has a legend naming both; the one-line panel none.
    assert!(has_text(&svg, "train") && has_text(&svg, "eval"));
    assert!(!has_text(&svg, "lr"));
    // Learning rates are labelled in scientific notation.
    assert!(svg.contains("e-5"));
}

#[test]
fn empty_panels_still_draw_and_bad_extensions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.png");
    line_chart(&[], "step", &empty).unwrap();
    assert_eq!(png_size(&std::fs::read(&empty).unwrap()), LINE_PANEL_SIZE);

    let gif = dir.path().join("curves.gif");
    match line_chart(&panels(), "step", &gif) {
        Err(e @ PlotError::UnsupportedExtension { .. }) => {
            assert!(e.to_string().contains("curves.gif"), "{e}");
        }
        other => panic!("expected UnsupportedExtension, got {other:?}"),
    }
    assert!(!gif.exists());
}
