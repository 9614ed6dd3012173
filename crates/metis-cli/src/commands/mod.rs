//! One module per subcommand.

pub mod audit;
pub mod cvss;
pub mod demo;
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
