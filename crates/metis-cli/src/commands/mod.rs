//! One module per subcommand.

pub mod cvss;
pub mod score;
