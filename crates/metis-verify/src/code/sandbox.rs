//! Runs untrusted Python programs, one process per sample, isolated from the host.
//!
//! Upstream (`openai/human-eval`, `human_eval/execution.py`) runs each program in a
//! subprocess with `exec`, a 3 s `SIGALRM` timer and a "reliability guard" that its own source
//! calls "NOT a security sandbox". Metis keeps upstream's execution semantics (the launcher,
//! `launcher.py`, runs the program with `exec` in fresh globals under the same timer and
//! reports `passed`, `timed out` or `failed: <exception>`) and puts the process in a real
//! sandbox (Linux):
//!
//! - **its own process and directory**: a fresh temporary directory per sample holds the
//!   program; the interpreter runs in a new session (process group) with a cleared
//!   environment and `-I -B` (isolated mode, no bytecode files), stdin carrying only the
//!   result nonce;
//! - **namespaces**: new network (no interface but a down loopback: no network at all), mount,
//!   pid, IPC and UTS namespaces, and a user namespace first when Metis is not root;
//! - **file system**: every mount read-only (`mount_setattr` recursive, Linux ≥ 5.12), a fresh
//!   `/proc` showing only the sample, and one writable place, a size-capped tmpfs as the
//!   working directory, gone when the sample ends;
//! - **limits**: `RLIMIT_CPU` (time limit + margin), `RLIMIT_AS` (memory), `RLIMIT_FSIZE`,
//!   `RLIMIT_NPROC`, `RLIMIT_NOFILE`, `RLIMIT_CORE` = 0; no capabilities (bounding set
//!   included) and no new privileges;
//! - **system calls**: a seccomp filter refusing new processes, sockets and signals to other
//!   processes ([`seccomp`]);
//! - **time**: the parent kills the whole process group at the time limit plus one second
//!   (upstream joins for `timeout + 1` s), and the death of the sample's pid-namespace init
//!   takes any other process with it;
//! - **output**: stdout and stderr are read to the end through pipes, keeping the first
//!   [`OUTPUT_CAP`] bytes of each, so a sample printing gigabytes costs no memory.
//!
//! One difference from a plain process remains: the sample is the first process of its pid
//! namespace, and the kernel ignores signals such a process sends itself without a handler
//! (`os.kill(os.getpid(), signal.SIGTERM)` does not end it; faults, limits and the parent's
//! `SIGKILL` do).
//!
//! When the system refuses a namespace or a mount step, [`Sandbox::new`] refuses with the step
//! it could not take, unless the configuration allows running unisolated
//! ([`SandboxConfig::allow_unisolated`], off by default): then samples run with limits,
//! dropped capabilities and the seccomp filter only, and every verdict says so.
//!
//! The interpreter is looked up on `PATH` (default `python3`) and then asked for its real
//! executable (`sys.executable`), since `PATH` entries are often wrappers such as pyenv shims
//! that need the caller's environment; results name that path and its `--version`.

#[cfg(target_os = "linux")]
mod child;
#[cfg(target_os = "linux")]
mod process;
#[cfg(target_os = "linux")]
mod seccomp;

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

/// Upstream's default time limit (`evaluate_functional_correctness --timeout 3.0`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default address-space limit of a sample, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 1024;
/// Default interpreter, looked up on `PATH`.
pub const DEFAULT_INTERPRETER: &str = "python3";
/// Bytes of stdout and of stderr kept per sample.
pub const OUTPUT_CAP: usize = 8 * 1024;
/// How long after the time limit the parent kills the sample (upstream: `join(timeout + 1)`).
pub const KILL_MARGIN: Duration = Duration::from_secs(1);

/// Largest file a sample may write, and the size and inode count of its working directory.
const FILE_SIZE_LIMIT: u64 = 16 << 20;
const WORK_BYTES: u64 = 64 << 20;
const WORK_INODES: u64 = 1024;
/// Processes (threads, for a non-root user) and open files per sample.
const PROCESS_LIMIT: u64 = 64;
const OPEN_FILE_LIMIT: u64 = 64;
/// Longest exception line kept from a failed sample.
const FAILURE_CAP: usize = 1000;

const LAUNCHER: &str = include_str!("sandbox/launcher.py");

/// How samples are run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SandboxConfig {
    /// The interpreter: a name looked up on `PATH`, or a path.
    pub interpreter: String,
    /// The program's time limit (upstream's `timeout`).
    pub timeout: Duration,
    /// The address-space limit, in MiB.
    pub memory_mib: u64,
    /// Run without namespaces (and so without network and file-system isolation) where the
    /// system refuses them, instead of refusing to run. Unsafe; off by default.
    pub allow_unisolated: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            interpreter: DEFAULT_INTERPRETER.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            memory_mib: DEFAULT_MEMORY_MIB,
            allow_unisolated: false,
        }
    }
}

/// The interpreter samples run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// The real executable (`sys.executable`).
    pub path: PathBuf,
    /// What `--version` prints (`Python 3.11.7`).
    pub version: String,
}

impl fmt::Display for Interpreter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.version)
    }
}

/// How isolated samples are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// Namespaces, read-only file system, limits, no capabilities, seccomp.
    Full,
    /// The system refused a namespace or mount step (`refused` says which) and the
    /// configuration allowed running without them: limits, no capabilities and seccomp only.
    Unisolated { refused: String },
}

/// How a sample ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The program ran to its end without an exception.
    Passed,
    /// An exception (its last traceback line), or an exit without a result.
    Failed(String),
    /// Over the time limit (the launcher's timer or the parent's deadline).
    TimedOut,
    /// Ended by a signal (a resource limit, a crash).
    Killed(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed => f.write_str("passed"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
            Outcome::TimedOut => f.write_str("timed out"),
            Outcome::Killed(signal) => write!(f, "killed: {signal}"),
        }
    }
}

/// The start of a stream and its full length.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first bytes (at most [`OUTPUT_CAP`]).
    pub head: Vec<u8>,
    /// Bytes written in all.
    pub total: u64,
}

impl fmt::Debug for Captured {
    /// The length and a short preview: a captured stream can be kilobytes of noise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Captured")
            .field("total", &self.total)
            .field("kept", &self.head.len())
            .field("start", &capped(&self.text(), 120))
            .finish()
    }
}

impl Captured {
    /// The kept bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// Whether bytes were dropped.
    pub fn is_truncated(&self) -> bool {
        self.total > self.head.len() as u64
    }
}

/// A finished sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    pub outcome: Outcome,
    pub stdout: Captured,
    pub stderr: Captured,
    pub elapsed: Duration,
}

/// The sandbox cannot run samples.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    #[error("interpreter {0:?} not found on PATH")]
    NotFound(String),
    #[error("interpreter {path}: {detail}")]
    Interpreter { path: String, detail: String },
    #[error(
        "this system refuses the code sandbox's {step}: {detail}. Samples are not run without \
         it; set code_unsafe_no_isolation to run them without namespaces (no network or \
         file-system isolation) at your own risk"
    )]
    Refused { step: &'static str, detail: String },
    #[error("the sandbox could not run a trivial program: {0}")]
    Probe(String),
    #[error("{what}: {detail}")]
    Io { what: &'static str, detail: String },
    #[error("the code sandbox runs on Linux only")]
    Unsupported,
}

fn io_error(what: &'static str) -> impl Fn(std::io::Error) -> SandboxError {
    move |e| SandboxError::Io {
        what,
        detail: e.to_string(),
    }
}

/// A checked sandbox: the interpreter found and a trivial program run through it.
#[derive(Debug)]
pub struct Sandbox {
    config: SandboxConfig,
    interpreter: Interpreter,
    isolation: Isolation,
}

/// The outcome of checking each configuration.
type Checked = HashMap<SandboxConfig, Result<Arc<Sandbox>, SandboxError>>;

/// Sandboxes already checked, by configuration (checking spawns processes; the answer does not
/// change while Metis runs).
static CHECKED: LazyLock<Mutex<Checked>> = LazyLock::new(Default::default);

impl Sandbox {
    /// The sandbox for `config`: finds the interpreter and runs a trivial program through the
    /// full isolation (falling back to none only where the configuration allows it). Checked
    /// once per configuration and process.
    pub fn new(config: &SandboxConfig) -> Result<Arc<Sandbox>, SandboxError> {
        let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
        checked
            .entry(config.clone())
            .or_insert_with(|| Self::check(config).map(Arc::new))
            .clone()
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    pub fn interpreter(&self) -> &Interpreter {
        &self.interpreter
    }

    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    fn check(config: &SandboxConfig) -> Result<Sandbox, SandboxError> {
        let interpreter = resolve_interpreter(&config.interpreter)?;
        let mut sandbox = Sandbox {
            config: config.clone(),
            interpreter,
            isolation: Isolation::Full,
        };
        let probe = sandbox.attempt(PROBE);
        if let Some(refused) = fallback(probe, config.allow_unisolated, &sandbox.interpreter)? {
            sandbox.isolation = Isolation::Unisolated { refused };
            probe_passed(sandbox.attempt(PROBE), &sandbox.interpreter)?;
        }
        Ok(sandbox)
    }

    /// A sandbox that runs without namespaces, as [`Sandbox::new`] falls back to where the
    /// system refuses them, for tests on systems that do not.
    #[cfg(test)]
    pub(crate) fn unisolated_for_tests(config: &SandboxConfig) -> Sandbox {
        Sandbox {
            config: config.clone(),
            interpreter: resolve_interpreter(&config.interpreter).expect("an interpreter"),
            isolation: Isolation::Unisolated {
                refused: "network namespace (a test's pretend refusal)".to_owned(),
            },
        }
    }

    /// Runs one program in the sandbox.
    pub fn run(&self, program: &str) -> Result<RunResult, SandboxError> {
        self.attempt(program).map_err(|a| match a {
            Attempt::Refused { step, detail } => SandboxError::Refused { step, detail },
            Attempt::Error(e) => e,
        })
    }

    fn attempt(&self, program: &str) -> Result<RunResult, Attempt> {
        let dir = tempfile::Builder::new()
            .prefix("metis-code-")
            .tempdir()
            .map_err(io_error("creating the sample's temporary directory"))?;
        let launcher = dir.path().join("launcher.py");
        let program_path = dir.path().join("program.py");
        let work = dir.path().join("work");
        std::fs::write(&launcher, LAUNCHER).map_err(io_error("writing the launcher"))?;
        std::fs::write(&program_path, program).map_err(io_error("writing the program"))?;
        std::fs::create_dir(&work).map_err(io_error("creating the working directory"))?;
        let nonce = nonce().map_err(io_error("reading /dev/urandom"))?;
        let result = self.spawn(&launcher, &program_path, &work, &nonce)?;
        // `dir` is removed here: the tmpfs that held the sample's writes lived only in its
        // mount namespace, and the sample can no longer run.
        drop(dir);
        Ok(result)
    }

    fn command(&self, launcher: &Path, program: &Path, work: &Path) -> Command {
        let mut command = Command::new(&self.interpreter.path);
        command
            .args(["-I", "-B"])
            .arg(launcher)
            .arg(program)
            .arg(self.config.timeout.as_secs_f64().to_string())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", work)
            .env("TMPDIR", work)
            .env("LANG", "C.UTF-8")
            // As upstream's reliability_guard.
            .env("OMP_NUM_THREADS", "1");
        command
    }

    #[cfg(target_os = "linux")]
    fn spawn(
        &self,
        launcher: &Path,
        program: &Path,
        work: &Path,
        nonce: &str,
    ) -> Result<RunResult, Attempt> {
        let deadline = self.config.timeout + KILL_MARGIN;
        let job = process::Job {
            command: self.command(launcher, program, work),
            isolate: self.isolation == Isolation::Full,
            work,
            limits: child::Limits {
                cpu_seconds: deadline.as_secs_f64().ceil() as u64,
                address_space_bytes: self.config.memory_mib.saturating_mul(1 << 20),
                file_size_bytes: FILE_SIZE_LIMIT,
                processes: PROCESS_LIMIT,
                open_files: OPEN_FILE_LIMIT,
                work_bytes: WORK_BYTES,
                work_inodes: WORK_INODES,
            },
            stdin: format!("{nonce}\n").into_bytes(),
            deadline,
            output_cap: OUTPUT_CAP,
        };
        let finished = process::run(job).map_err(|e| match e.step {
            Some(step) => Attempt::Refused {
                step: step.describe(),
                detail: e.error.to_string(),
            },
            None => Attempt::Error(SandboxError::Io {
                what: "running the sample",
                detail: e.error.to_string(),
            }),
        })?;
        let outcome = classify(&finished, nonce);
        Ok(RunResult {
            outcome,
            stdout: finished.stdout,
            stderr: finished.stderr,
            elapsed: finished.elapsed,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn spawn(&self, _: &Path, _: &Path, _: &Path, _: &str) -> Result<RunResult, Attempt> {
        Err(Attempt::Error(SandboxError::Unsupported))
    }
}

/// The program that checks a sandbox: the launcher and interpreter run, nothing else.
const PROBE: &str = "pass\n";

/// After the probe under full isolation: `None` when it passed, the refused step when the
/// system refused isolation and the configuration allows running without it, else the error.
fn fallback(
    probe: Result<RunResult, Attempt>,
    allow_unisolated: bool,
    interpreter: &Interpreter,
) -> Result<Option<String>, SandboxError> {
    match probe {
        Err(Attempt::Refused { step, detail }) if allow_unisolated => {
            Ok(Some(format!("{step}: {detail}")))
        }
        other => probe_passed(other, interpreter).map(|()| None),
    }
}

fn probe_passed(
    probe: Result<RunResult, Attempt>,
    interpreter: &Interpreter,
) -> Result<(), SandboxError> {
    match probe {
        Ok(r) if r.outcome == Outcome::Passed => Ok(()),
        Ok(r) => Err(SandboxError::Probe(format!(
            "{} ({interpreter}); stderr: {}",
            r.outcome,
            r.stderr.text().trim()
        ))),
        Err(Attempt::Refused { step, detail }) => Err(SandboxError::Refused { step, detail }),
        Err(Attempt::Error(e)) => Err(e),
    }
}

/// Why an attempt to run a sample did not produce a result.
enum Attempt {
    /// An isolation step the system refused.
    Refused {
        step: &'static str,
        detail: String,
    },
    Error(SandboxError),
}

impl From<SandboxError> for Attempt {
    fn from(e: SandboxError) -> Self {
        Attempt::Error(e)
    }
}

/// The outcome of a finished sample: the parent's deadline first, then the launcher's report
/// (trusted only after the nonce), then how the process ended.
#[cfg(target_os = "linux")]
fn classify(finished: &process::Finished, nonce: &str) -> Outcome {
    if finished.deadline_hit {
        return Outcome::TimedOut;
    }
    let report = String::from_utf8_lossy(&finished.result);
    let reported = report
        .split_once('\n')
        .filter(|(first, _)| *first == nonce)
        .map(|(_, outcome)| outcome);
    match reported {
        Some("passed") if finished.status.success() => Outcome::Passed,
        Some("timed out") => Outcome::TimedOut,
        Some(line) if line.starts_with("failed: ") => {
            Outcome::Failed(capped(&line["failed: ".len()..], FAILURE_CAP))
        }
        _ => match process::signal_name(&finished.status) {
            Some(signal) => Outcome::Killed(signal),
            None => Outcome::Failed(format!(
                "exited with status {} without reporting a result{}",
                finished.status.code().unwrap_or(-1),
                last_line(&finished.stderr.text())
                    .map(|l| format!(" ({})", capped(l, FAILURE_CAP)))
                    .unwrap_or_default()
            )),
        },
    }
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// `text` cut to at most `max` bytes on a character boundary, with an ellipsis when cut.
pub(crate) fn capped(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// 128 random bits, hex: the proof that a result line comes from the launcher.
fn nonce() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Finds `name` on `PATH` (or takes it as a path when it has a `/`), then asks it for its real
/// executable and its version.
fn resolve_interpreter(name: &str) -> Result<Interpreter, SandboxError> {
    let found = find_program(name).ok_or_else(|| SandboxError::NotFound(name.to_owned()))?;
    let shown = found.display().to_string();
    let ask = |args: &[&str], path: &Path| {
        Command::new(path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| SandboxError::Interpreter {
                path: shown.clone(),
                detail: e.to_string(),
            })
    };
    let executable = ask(&["-I", "-c", "import sys; print(sys.executable)"], &found)?;
    let path = String::from_utf8_lossy(&executable.stdout)
        .trim()
        .to_owned();
    if !executable.status.success() || path.is_empty() {
        return Err(SandboxError::Interpreter {
            path: shown,
            detail: format!(
                "could not report sys.executable ({}): {}",
                executable.status,
                String::from_utf8_lossy(&executable.stderr).trim()
            ),
        });
    }
    let path = PathBuf::from(path);
    let version = ask(&["--version"], &path)?;
    // Python 2 printed its version on stderr.
    let text = [&version.stdout, &version.stderr]
        .iter()
        .map(|b| String::from_utf8_lossy(b).trim().to_owned())
        .find(|t| !t.is_empty())
        .unwrap_or_else(|| "unknown version".to_owned());
    Ok(Interpreter {
        path,
        version: text,
    })
}

fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return executable(&path).then_some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_cut_on_character_boundaries() {
        assert_eq!(capped("abc", 3), "abc");
        assert_eq!(capped("abcdef", 3), "abc…");
        assert_eq!(capped("aéb", 2), "a…");
    }

    #[test]
    fn outcomes_read_as_upstream() {
        assert_eq!(Outcome::Passed.to_string(), "passed");
        assert_eq!(Outcome::TimedOut.to_string(), "timed out");
        assert_eq!(
            Outcome::Failed("AssertionError".into()).to_string(),
            "failed: AssertionError"
        );
        assert_eq!(
            Outcome::Killed("SIGKILL".into()).to_string(),
            "killed: SIGKILL"
        );
    }

    fn probe(outcome: Outcome) -> Result<RunResult, Attempt> {
        Ok(RunResult {
            outcome,
            stdout: Captured::default(),
            stderr: Captured {
                head: b"Traceback ...\nboom".to_vec(),
                total: 18,
            },
            elapsed: Duration::ZERO,
        })
    }

    fn refused() -> Result<RunResult, Attempt> {
        Err(Attempt::Refused {
            step: "network namespace (unshare CLONE_NEWNET)",
            detail: "Operation not permitted (os error 1)".into(),
        })
    }

    #[test]
    fn a_refused_namespace_is_an_error_unless_unisolated_runs_are_allowed() {
        let python = Interpreter {
            path: "/usr/bin/python3".into(),
            version: "Python 3.11.2".into(),
        };
        let err = fallback(refused(), false, &python).unwrap_err();
        assert!(matches!(err, SandboxError::Refused { step, .. } if step.contains("CLONE_NEWNET")));
        assert!(
            err.to_string().contains("code_unsafe_no_isolation"),
            "{err}"
        );
        assert_eq!(
            fallback(refused(), true, &python).unwrap().as_deref(),
            Some("network namespace (unshare CLONE_NEWNET): Operation not permitted (os error 1)")
        );
        assert_eq!(fallback(probe(Outcome::Passed), true, &python), Ok(None));
        let broken = fallback(probe(Outcome::Failed("x".into())), true, &python).unwrap_err();
        assert!(
            matches!(&broken, SandboxError::Probe(m) if m.contains("boom") && m.contains("3.11.2")),
            "{broken}"
        );
    }

    #[test]
    fn unisolated_runs_keep_limits_and_the_system_call_filter() {
        let sandbox = Sandbox::unisolated_for_tests(&SandboxConfig {
            timeout: Duration::from_secs(1),
            ..SandboxConfig::default()
        });
        let run = |program: &str| sandbox.run(program).unwrap().outcome;
        assert_eq!(run("open('x.txt', 'w').write('ok')\n"), Outcome::Passed);
        for hostile in [
            "import os\nos.fork()\n",
            "import socket\nsocket.socket()\n",
            // Signal 0 only probes: harmless even if the filter let it through.
            "import os\nos.kill(1, 0)\n",
        ] {
            assert!(
                matches!(run(hostile), Outcome::Failed(m) if m.starts_with("PermissionError")),
                "{hostile}"
            );
        }
        assert_eq!(run("while True:\n    pass\n"), Outcome::TimedOut);
    }

    #[test]
    fn missing_interpreter_is_named() {
        let config = SandboxConfig {
            interpreter: "metis-no-such-python".into(),
            ..SandboxConfig::default()
        };
        assert_eq!(
            Sandbox::new(&config).unwrap_err(),
            SandboxError::NotFound("metis-no-such-python".into())
        );
    }
}
