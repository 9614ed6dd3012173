//! One module per subcommand.

pub mod cvss;
pub mod eval;
pub mod generate;
pub mod report;
pub mod score;
