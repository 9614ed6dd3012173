//! Downloading benchmark data from its pinned public source into the cache.
//!
//! Every file is fetched at a fixed revision (a GitHub commit or a Hugging Face dataset
//! revision), turned into the file of the data layout if the upstream file differs
//! ([`Transform`]), written to a temporary file next to its destination and renamed into
//! place, so a cache never holds a partial file. Byte-exact files are checked against the
//! pinned SHA-256; a mismatch is an error and nothing is written.

use std::path::Path;
use std::time::Duration;

use super::{sha256_hex, BenchmarkError, BenchmarkSpec, DataFile, Transform};

/// Where a benchmark's data is published, pinned to a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteSource {
    /// A GitHub repository (`owner/name`) at a commit; files come from
    /// `raw.githubusercontent.com`.
    GitHub {
        repo: &'static str,
        commit: &'static str,
    },
    /// A GitHub repository whose file is stored with Git LFS (the raw URL serves only the
    /// pointer); the content comes from `media.githubusercontent.com`.
    GitHubLfs {
        repo: &'static str,
        commit: &'static str,
    },
    /// A Hugging Face dataset repository at a revision (commit hash).
    HuggingFace {
        repo: &'static str,
        revision: &'static str,
    },
    /// A file on its authors' site with no revision history (MMLU's `data.tar`); its content
    /// is pinned by the hash recorded at the first download.
    Url { base: &'static str },
    /// A dataset behind a licence click-through (GPQA): never downloaded; the user puts the
    /// file into the data directory after accepting the terms at `page`.
    Gated { page: &'static str },
    /// A prompt file given by the user (`metis eval --prompts`): read where it is, never
    /// downloaded, fingerprinted by its SHA-256.
    LocalFile,
}

impl RemoteSource {
    /// A short, human-readable name of the source and its pin (`github.com/owner/repo@57ce8c246e5f`).
    pub fn describe(&self) -> String {
        let short = |rev: &str| rev.chars().take(12).collect::<String>();
        match self {
            RemoteSource::GitHub { repo, commit } => format!("github.com/{repo}@{}", short(commit)),
            RemoteSource::GitHubLfs { repo, commit } => {
                format!("github.com/{repo}@{} (LFS)", short(commit))
            }
            RemoteSource::HuggingFace { repo, revision } => {
                format!("huggingface.co/datasets/{repo}@{}", short(revision))
            }
            RemoteSource::Url { base } => format!("{base} (hash recorded at first download)"),
            RemoteSource::Gated { page } => format!("{page} (gated: a local copy is read)"),
            RemoteSource::LocalFile => "a local prompt file".to_owned(),
        }
    }

    /// The download URL of `path` (relative to the repository root) at the pinned revision.
    pub fn url(&self, path: &str) -> String {
        let path = path.trim_start_matches('/');
        match self {
            RemoteSource::GitHub { repo, commit } => {
                format!("https://raw.githubusercontent.com/{repo}/{commit}/{path}")
            }
            RemoteSource::GitHubLfs { repo, commit } => {
                format!("https://media.githubusercontent.com/media/{repo}/{commit}/{path}")
            }
            RemoteSource::HuggingFace { repo, revision } => {
                format!("https://huggingface.co/datasets/{repo}/resolve/{revision}/{path}")
            }
            RemoteSource::Url { base } => format!("{}/{path}", base.trim_end_matches('/')),
            RemoteSource::Gated { page } => format!("{page} ({path})"),
            RemoteSource::LocalFile => path.to_owned(),
        }
    }
}

/// The pinned download URL of one of `spec`'s data files.
pub fn remote_url(spec: &BenchmarkSpec, file: &DataFile) -> String {
    spec.source.url(file.remote_path)
}

fn fetch_err(url: &str, detail: impl std::fmt::Display) -> BenchmarkError {
    BenchmarkError::Fetch {
        url: url.to_owned(),
        detail: detail.to_string(),
    }
}

/// Downloads `file` of dataset `id` from `source` to `dest` (atomically) and returns the
/// SHA-256 of what was written.
pub(crate) async fn download(
    id: &str,
    source: &RemoteSource,
    file: &DataFile,
    dest: &Path,
) -> Result<String, BenchmarkError> {
    let url = source.url(file.remote_path);
    if *source == RemoteSource::LocalFile {
        return Err(fetch_err(
            &url,
            format!("{id} is a local prompt file: nothing to download"),
        ));
    }
    if let RemoteSource::Gated { page } = source {
        return Err(fetch_err(
            &url,
            format!(
                "{} is gated: accept its terms at {page}, download {} and save it as {} \
                 (or pass --data-dir with a directory holding {})",
                id,
                file.remote_path,
                dest.display(),
                file.path
            ),
        ));
    }
    tracing::info!(benchmark = id, %url, dest = %dest.display(), "downloading benchmark data");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| fetch_err(&url, e))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| fetch_err(&url, e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fetch_err(&url, format!("HTTP {status}")));
    }
    let body = response.bytes().await.map_err(|e| fetch_err(&url, e))?;
    let content = apply_transform(file.transform, &body).map_err(|e| fetch_err(&url, e))?;
    let sha = sha256_hex(&content);
    if !file.is_pinned() {
        tracing::warn!(%url, "no SHA-256 pinned for {}; the download has sha256 {sha}", file.path);
    } else if sha != file.sha256 {
        if file.transform.is_exact() {
            return Err(BenchmarkError::Checksum {
                url,
                expected: file.sha256.to_owned(),
                actual: sha,
            });
        }
        // A re-serialised file (SecEval, MMLU) need not match the shared copy byte for byte.
        tracing::warn!(%url, "converted file has sha256 {sha}, the reference copy {}", file.sha256);
    }
    write_atomically(dest, &content).await?;
    tracing::info!(dest = %dest.display(), sha256 = %sha, "benchmark data cached");
    Ok(sha)
}

/// Writes `content` to a temporary file beside `dest`, then renames it into place.
pub(crate) async fn write_atomically(dest: &Path, content: &[u8]) -> Result<(), BenchmarkError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BenchmarkError::Io { path, source }
    };
    let dir = dest.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
    let name = dest
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.part", std::process::id()));
    if let Err(e) = tokio::fs::write(&tmp, content).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io(&tmp)(e));
    }
    if let Err(e) = tokio::fs::rename(&tmp, dest).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io(dest)(e));
    }
    Ok(())
}

/// Turns an upstream file into the data-layout file.
pub fn apply_transform(transform: Transform, body: &[u8]) -> Result<Vec<u8>, String> {
    match transform {
        Transform::None => Ok(body.to_vec()),
        Transform::SecBenchEnglish => {
            let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
            let mut out = String::new();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let value: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| format!("line {}: invalid JSON: {e}", n + 1))?;
                if value.get("language").and_then(|l| l.as_str()) == Some("English") {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            Ok(out.into_bytes())
        }
        Transform::SecEvalJsArray => {
            let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
            // `problem_data = [ ... ];`: the right-hand side is plain JSON.
            let start = text
                .find('=')
                .and_then(|eq| text[eq..].find('[').map(|i| eq + i))
                .ok_or("no `= [` assignment found")?;
            let end = text.rfind(']').ok_or("no closing `]` found")?;
            if end < start {
                return Err("no JSON array found".to_owned());
            }
            let items: Vec<serde_json::Value> = serde_json::from_str(&text[start..=end])
                .map_err(|e| format!("invalid JSON array: {e}"))?;
            let mut out = String::new();
            for item in items {
                out.push_str(&serde_json::to_string(&item).map_err(|e| e.to_string())?);
                out.push('\n');
            }
            Ok(out.into_bytes())
        }
        Transform::TaaGoldColumn => {
            // CTIBench's response table: keep its `URL` and `GT` columns, in order.
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(b'\t')
                .has_headers(true)
                .flexible(true)
                .from_reader(body);
            let headers = reader.headers().map_err(|e| e.to_string())?.clone();
            let col = |name: &str| {
                headers
                    .iter()
                    .position(|h| h.trim() == name)
                    .ok_or_else(|| format!("no {name:?} column in the response table"))
            };
            let (url, gt) = (col("URL")?, col("GT")?);
            let mut out = String::from("URL\tGT\n");
            for record in reader.records() {
                let record = record.map_err(|e| e.to_string())?;
                let field = |i: usize| record.get(i).unwrap_or_default().replace(['\t', '\n'], " ");
                out.push_str(&format!("{}\t{}\n", field(url), field(gt)));
            }
            Ok(out.into_bytes())
        }
        Transform::MmluTar => mmlu_tar_to_jsonl(body),
        Transform::ZipMember(member) => zip_member(body, member),
        Transform::MmluDropHeaderAndExtraColumn => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(true)
                .from_reader(body);
            let mut writer = csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new());
            for record in reader.records() {
                let record = record.map_err(|e| e.to_string())?;
                if record.len() < 6 {
                    return Err(format!(
                        "row with {} fields, expected at least 6",
                        record.len()
                    ));
                }
                writer
                    .write_record(record.iter().take(6))
                    .map_err(|e| e.to_string())?;
            }
            writer.into_inner().map_err(|e| e.to_string())
        }
    }
}

/// One member of a zip archive.
fn zip_member(body: &[u8], member: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(body)).map_err(|e| format!("not a zip: {e}"))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|e| format!("{member} in the archive: {e}"))?;
    let mut out = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
    entry
        .read_to_end(&mut out)
        .map_err(|e| format!("reading {member}: {e}"))?;
    Ok(out)
}

/// MMLU's `data.tar` (`data/{dev,test}/<subject>_{dev,test}.csv`, headerless
/// `question,A,B,C,D,answer`) as one JSONL file: subjects in name order, for each its `dev`
/// rows then its `test` rows, in file order.
fn mmlu_tar_to_jsonl(body: &[u8]) -> Result<Vec<u8>, String> {
    use std::collections::BTreeMap;
    use std::io::Read;
    // (subject, split) → CSV text; `dev` sorts before `test`.
    let mut files: BTreeMap<(String, &'static str), String> = BTreeMap::new();
    let mut archive = tar::Archive::new(body);
    for entry in archive.entries().map_err(|e| format!("not a tar: {e}"))? {
        let mut entry = entry.map_err(|e| format!("reading the tar: {e}"))?;
        let name = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let Some((split, subject)) = mmlu_member(&name) else {
            continue;
        };
        let mut text = String::new();
        entry
            .read_to_string(&mut text)
            .map_err(|e| format!("{name}: {e}"))?;
        files.insert((subject, split), text);
    }
    if files.is_empty() {
        return Err("no data/dev or data/test CSV in the archive".to_owned());
    }
    let mut out = Vec::new();
    for ((subject, split), text) in files {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        for (n, record) in reader.records().enumerate() {
            let record = record.map_err(|e| format!("{subject}_{split}.csv: {e}"))?;
            if record.len() != 6 {
                return Err(format!(
                    "{subject}_{split}.csv row {}: {} fields, expected 6",
                    n + 1,
                    record.len()
                ));
            }
            let row = serde_json::json!({
                "subject": subject,
                "split": split,
                "question": &record[0],
                "choices": [&record[1], &record[2], &record[3], &record[4]],
                "answer": record[5].trim(),
            });
            out.extend_from_slice(row.to_string().as_bytes());
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// `data/dev/<subject>_dev.csv` → (`dev`, subject); likewise for `test`; anything else (the
/// `val` and `auxiliary_train` splits) → None.
fn mmlu_member(name: &str) -> Option<(&'static str, String)> {
    let name = name.trim_start_matches("./");
    for split in ["dev", "test"] {
        let prefix = format!("data/{split}/");
        let suffix = format!("_{split}.csv");
        if let Some(subject) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(&suffix))
        {
            if !subject.is_empty() && !subject.contains('/') {
                return Some((split, subject.to_owned()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmlu_tar_becomes_jsonl_with_dev_before_test() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |name: &str, text: &str| {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, text.as_bytes())
                .unwrap();
        };
        add("data/test/virology_test.csv", "\"Q, t\",a,b,c,d,B\n");
        add("data/dev/virology_dev.csv", "Qd,a,b,c,d,A\n");
        add("data/val/virology_val.csv", "Qv,a,b,c,d,C\n");
        add("data/test/anatomy_test.csv", "Qa,a,b,c,d, D\n");
        let tar = builder.into_inner().unwrap();
        let out = String::from_utf8(mmlu_tar_to_jsonl(&tar).unwrap()).unwrap();
        let rows: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let keys: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r["subject"].as_str().unwrap().into(),
                    r["split"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("anatomy", "test"),
                ("virology", "dev"),
                ("virology", "test")
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(rows[0]["answer"], "D");
        assert_eq!(rows[2]["question"], "Q, t");
        assert!(mmlu_tar_to_jsonl(b"not a tar at all").is_err());
    }

    #[test]
    fn zip_member_extracts_one_file() {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file("data/hotpotqa.jsonl", opts).unwrap();
        zip.write_all(b"{\"input\":\"q\"}\n").unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        assert_eq!(
            zip_member(&bytes, "data/hotpotqa.jsonl").unwrap(),
            b"{\"input\":\"q\"}\n"
        );
        let err = zip_member(&bytes, "data/2wikimqa.jsonl").unwrap_err();
        assert!(err.contains("data/2wikimqa.jsonl"), "{err}");
    }
}
