//! `metis cvss`: bulk CVSS scoring. A bad vector — or an input line that is not UTF-8 or is far
//! too long to be one — is reported on its own line and the run goes on; only usage errors end
//! it with a non-zero status. A reader that goes away (`metis cvss … | head`) ends the command
//! quietly.

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

/// The longest input line read as a vector: a v4.0 vector with every metric is about 300 bytes.
const MAX_LINE_BYTES: usize = 4096;
/// How much of a rejected line is echoed back in its error object.
const ECHO_CHARS: usize = 120;

/// Reads one line into `buf`, keeping at most `cap` bytes of it (a newline-free stream of any
/// size never fills memory); returns the line's full length without its newline, or `None` at
/// the end of input.
fn read_line_capped(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<Option<usize>> {
    buf.clear();
    let (mut len, mut any) = (0usize, false);
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(any.then_some(len));
        }
        any = true;
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        len += part.len();
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            return Ok(Some(len));
        }
    }
}

/// One input line that cannot be a vector, reported without scoring (`raw` holds at most
/// [`MAX_LINE_BYTES`] + 1 bytes of a line of `len` bytes).
fn unreadable(raw: &[u8], len: usize) -> Option<(String, String)> {
    let echo = |s: &str| s.chars().take(ECHO_CHARS).collect::<String>();
    if len > MAX_LINE_BYTES {
        return Some((
            echo(&String::from_utf8_lossy(raw)),
            format!("input line of {len} bytes is too long to be a CVSS vector"),
        ));
    }
    match std::str::from_utf8(raw) {
        Err(e) => Some((
            echo(&String::from_utf8_lossy(raw)),
            format!(
                "input line is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )),
        Ok(_) => None,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match score_all(&args) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn score_all(args: &Args) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut emit = |line: &Line<'_>| -> io::Result<()> {
        if args.json {
            // Serialising plain numbers and strings cannot fail.
            let text = serde_json::to_string(line).unwrap_or_default();
            writeln!(out, "{text}")
        } else {
            writeln!(out, "{}", human(line))
        }
    };
    if args.vectors.is_empty() {
        let mut stdin = io::stdin().lock();
        let mut buf = Vec::new();
        while let Some(len) = read_line_capped(&mut stdin, &mut buf, MAX_LINE_BYTES + 1)? {
            let raw = buf.strip_suffix(b"\r").unwrap_or(&buf);
            match unreadable(raw, len) {
                Some((vector, error)) => emit(&Line::Failed {
                    vector: &vector,
                    error,
                })?,
                None => {
                    let text = std::str::from_utf8(raw).unwrap_or_default();
                    emit(&score(text.trim()))?
                }
            }
        }
    } else {
        for v in &args.vectors {
            emit(&score(v.trim()))?;
        }
    }
    out.flush()
}
