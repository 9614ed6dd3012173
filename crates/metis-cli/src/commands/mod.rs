//! One module per subcommand.

pub mod audit;
pub mod bench;
pub mod cvss;
pub mod demo;
pub mod eval;
pub mod generate;
pub mod guard_args;
pub mod model_args;
pub mod report;
pub mod safety;
pub mod score;
pub mod serve;
pub mod train;

/// Which of the report's sampling defaults a model gets (`--kind`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// A reasoning model: T 0.6, top-p 0.95.
    Reasoning,
    /// An instruct model: T 0.3, top-p 1.0.
    Instruct,
}

/// The answer-extraction protocols as clap lists and parses them (`--protocol last-line`);
/// [`protocol_parser`] turns the choice into `metis_verify::Protocol`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolArg {
    /// The answer on the last non-empty line.
    LastLine,
    /// FAITH's ordered patterns on normalised text.
    Faith,
    /// FAITH's patterns exactly as FAITH applies them.
    FaithStrict,
}

impl From<ProtocolArg> for metis_verify::Protocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::LastLine => Self::LastLine,
            ProtocolArg::Faith => Self::Faith,
            ProtocolArg::FaithStrict => Self::FaithStrict,
        }
    }
}

/// The value parser of a `--protocol` flag typed `metis_verify::Protocol`.
pub fn protocol_parser() -> impl clap::builder::TypedValueParser<Value = metis_verify::Protocol> {
    use clap::builder::TypedValueParser;
    clap::builder::EnumValueParser::<ProtocolArg>::new().map(metis_verify::Protocol::from)
}

/// A flag set on Ctrl-C (with a note that the same command resumes): long runs poll it, stop
/// starting work, and commit what arrived.
pub fn stop_on_ctrl_c() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupt: finishing up; rerun the same command to resume");
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    stop
}
