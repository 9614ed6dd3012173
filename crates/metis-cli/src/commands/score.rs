//! `metis score`: grade one response with the same verifier the harness and trainer use, and
//! show how the grade came about.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use metis_verify::cvss;
use metis_verify::format::{self, FormatPolicy};
use metis_verify::reasoning::Delimiters;
use metis_verify::spec::AttackCatalogRef;
use metis_verify::{Protocol, Verifier, VerifierFactory, VerifierSpec};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Which verifier grades the response.
    #[arg(long, value_parser = ["mcq", "cwe", "cvss", "attack", "ifeval", "math", "taa", "qa", "bbh", "open_ended", "code"])]
    task: Option<String>,
    /// The gold answer: a letter or letter set (mcq), a CWE id, a CVSS vector,
    /// comma-separated technique ids (attack), the instruction object
    /// `{"instruction_id_list": [...], "kwargs": [...]}` (ifeval), a math answer (math), or a
    /// BBH target as the dataset writes it (bbh: `(B)`, `True`, `-11520`, `] ] >`), or the
    /// problem object `{"task_id", "prompt", "test", "entry_point"}` (code; sandbox options
    /// go in `--spec`).
    #[arg(long)]
    gold: String,
    /// File holding the model's response (`-` for stdin).
    #[arg(long)]
    response: PathBuf,
    /// The whole verifier spec as JSON (what a GRPO record's `verifier` or a benchmark export
    /// carries); flags given next to it override its fields.
    #[arg(long)]
    spec: Option<String>,
    /// Answer-extraction protocol.
    #[arg(long, value_parser = super::protocol_parser())]
    protocol: Option<Protocol>,
    /// Opening and closing reasoning delimiters.
    #[arg(long, num_args = 2, value_names = ["OPEN", "CLOSE"], default_values = ["<think>", "</think>"])]
    delimiters: Vec<String>,
    /// mcq: number of options (4 = A–D).
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=26))]
    options: Option<u8>,
    /// mcq: several options may be correct (exact-set match).
    #[arg(long)]
    multi: bool,
    /// cvss: version assumed for a vector written without its `CVSS:x.y/` prefix.
    #[arg(long)]
    cvss_version: Option<String>,
    /// Data directory in the layout of the shared data (cwe/, attack/); enables the CWE
    /// hierarchy metric and ATT&CK revocation mapping.
    #[arg(long, env = "METIS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// attack: catalog version.
    #[arg(long)]
    attack_version: Option<String>,
    /// attack: catalog domain (enterprise or mobile).
    #[arg(long)]
    attack_domain: Option<String>,
    /// attack: a predicted sub-technique counts as its parent technique (the default, as
    /// CTIBench-ATE grades); `--credit-parent false` compares ids as written.
    #[arg(long)]
    credit_parent: Option<bool>,
    /// ifeval: the mode that decides correctness (strict or loose).
    #[arg(long)]
    ifeval_mode: Option<String>,
    /// math: the extraction that decides correctness (reasoning, gsm8k-strict,
    /// gsm8k-cot-strict, gsm8k-flexible, minerva).
    #[arg(long)]
    math_extraction: Option<String>,
    /// taa: the scoring rule that decides correctness (fixed or ctibench; both are reported).
    #[arg(long)]
    taa_rule: Option<String>,
    /// qa: official (HotpotQA/2Wiki scripts, yes/no rule) or longbench scoring.
    #[arg(long)]
    qa_rule: Option<String>,
    /// bbh: the answer type (multiple_choice, boolean, yes_no, validity, integer, dyck,
    /// sorted_words, free_text).
    #[arg(long)]
    bbh_answer: Option<String>,
    /// bbh: the extraction that decides correctness (fixed, or upstream for lm-eval's
    /// `bbh_cot_fewshot` regex; both are reported).
    #[arg(long)]
    bbh_extraction: Option<String>,
    /// The chat template opened the reasoning block in the prompt (format check).
    #[arg(long)]
    prefilled_think: bool,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

/// The verifier spec the flags describe: `--spec` first, then each flag over it.
fn spec(args: &Args) -> anyhow::Result<VerifierSpec> {
    let mut spec: VerifierSpec = match &args.spec {
        Some(json) => serde_json::from_str(json).context("--spec")?,
        None => VerifierSpec::default(),
    };
    if let Some(t) = &args.task {
        spec.task = Some(t.parse()?);
    }
    if spec.task.is_none() {
        anyhow::bail!("give --task or a --spec that names its task");
    }
    if let Some(p) = args.protocol {
        spec.protocol = Some(p);
    }
    if args.options.is_some() {
        spec.choices = args.options;
    }
    if args.multi {
        spec.multi = Some(true);
    }
    if let Some(v) = &args.cvss_version {
        v.parse::<cvss::Version>()
            .map_err(|_| anyhow::anyhow!("--cvss-version: expected 2.0, 3.0, 3.1 or 4.0"))?;
        spec.cvss_version = Some(v.clone());
    }
    if args.credit_parent.is_some() {
        spec.credit_parent = args.credit_parent;
    }
    if args.attack_domain.is_some() || args.attack_version.is_some() {
        let domain = args.attack_domain.as_deref().unwrap_or("enterprise");
        let version = args
            .attack_version
            .as_deref()
            .unwrap_or(AttackCatalogRef::DEFAULT_VERSION);
        spec.attack_catalog = Some(
            format!("{domain}-{version}")
                .parse::<AttackCatalogRef>()
                .map_err(|e| anyhow::anyhow!("--attack-domain/--attack-version: {e}"))?,
        );
    }
    if let Some(m) = &args.ifeval_mode {
        spec.ifeval_mode = Some(m.parse().map_err(anyhow::Error::msg)?);
    }
    if let Some(m) = &args.math_extraction {
        spec.math_extraction = Some(m.parse().map_err(anyhow::Error::msg)?);
    }
    if let Some(r) = &args.taa_rule {
        spec.taa_rule = Some(match r.as_str() {
            "fixed" => metis_verify::taa::TaaRule::Fixed,
            "ctibench" => metis_verify::taa::TaaRule::Ctibench,
            other => anyhow::bail!("--taa-rule: expected fixed or ctibench, got {other:?}"),
        });
    }
    if let Some(r) = &args.qa_rule {
        spec.qa_rule = Some(match r.as_str() {
            "official" => metis_verify::qa::QaRule::Official,
            "longbench" => metis_verify::qa::QaRule::LongBench,
            other => anyhow::bail!("--qa-rule: expected official or longbench, got {other:?}"),
        });
    }
    if let Some(a) = &args.bbh_answer {
        spec.bbh_answer = Some(a.parse().map_err(anyhow::Error::msg)?);
    }
    if let Some(e) = &args.bbh_extraction {
        spec.bbh_extraction = Some(e.parse().map_err(anyhow::Error::msg)?);
    }
    spec.validate()?;
    Ok(spec.resolved())
}

fn build(args: &Args) -> anyhow::Result<Box<dyn Verifier>> {
    let delimiters = Delimiters::new(&args.delimiters[0], &args.delimiters[1])
        .context("--delimiters: both must be non-empty and different")?;
    let mut factory = VerifierFactory::new(args.data_dir.as_deref()).with_delimiters(delimiters);
    let verifier = factory.build_boxed(&spec(args)?)?;
    if args.data_dir.is_some() {
        for note in factory.notes() {
            eprintln!("note: {note}");
        }
    }
    Ok(verifier)
}

fn read_response(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the response from stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the response from {}", path.display()))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let verifier = build(&args)?;
    let response = read_response(&args.response)?;
    let verdict = verifier.grade(&response, &args.gold)?;
    let policy = FormatPolicy {
        delimiters: verifier.options().delimiters.clone(),
        prefilled_open: args.prefilled_think,
        ..FormatPolicy::default()
    };
    let fmt = format::check(&response, &policy);
    if args.json {
        let out = json!({ "verdict": verdict, "format": fmt });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("task:       {}", verdict.task);
    println!("reasoning:  {:?}", verdict.think);
    match (&verdict.extracted, verdict.format, &verdict.invalid) {
        (Some(x), Some(f), _) => println!("extracted:  {x} ({f:?} format)"),
        (_, _, Some(r)) => println!("extracted:  none (invalid: {r})"),
        _ => println!("extracted:  none"),
    }
    println!(
        "validity:   {}",
        if verdict.is_valid() {
            "valid"
        } else {
            "invalid"
        }
    );
    println!("score:      {}", verdict.score);
    println!("correct:    {}", verdict.correct);
    for (k, v) in &verdict.metrics {
        println!("  {k:<18} {v}");
    }
    for r in &verdict.reasons {
        println!("note:       {r}");
    }
    if fmt.is_ok() {
        println!("format:     ok");
    } else {
        println!(
            "format:     penalty {} ({})",
            fmt.penalty,
            fmt.reasons().join("; ")
        );
    }
    Ok(())
}
