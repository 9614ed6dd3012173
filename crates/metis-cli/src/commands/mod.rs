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
