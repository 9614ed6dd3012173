//! One module per subcommand.

pub mod audit;
pub mod cvss;
pub mod eval;
pub mod generate;
pub mod guard_args;
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
