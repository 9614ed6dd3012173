//! Spawning one sample and watching it: pipes, the isolated child ([`super::child`]), the
//! wall-clock deadline, the kill, and output capture with a cap.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::child::{ChildPlan, Limits, Step};
use super::Captured;

/// What the parent knows about a finished sample.
pub(super) struct Finished {
    pub status: ExitStatus,
    /// Killed by the parent at the wall-clock deadline.
    pub deadline_hit: bool,
    pub stdout: Captured,
    pub stderr: Captured,
    /// What the launcher wrote on the result descriptor (capped).
    pub result: Vec<u8>,
    pub elapsed: Duration,
}

/// A sample that could not be started: the isolation step the system refused, if known.
pub(super) struct SpawnError {
    pub step: Option<Step>,
    pub error: io::Error,
}

impl From<io::Error> for SpawnError {
    fn from(error: io::Error) -> Self {
        Self { step: None, error }
    }
}

/// How one sample is run.
pub(super) struct Job<'a> {
    pub command: Command,
    pub isolate: bool,
    pub work: &'a std::path::Path,
    pub limits: Limits,
    /// The nonce the launcher reads from stdin.
    pub stdin: Vec<u8>,
    pub deadline: Duration,
    pub output_cap: usize,
}

/// Bytes kept of the result descriptor (the launcher writes a nonce and one short line).
const RESULT_CAP: usize = 4096;

/// A pipe whose both ends close on exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs `job` to completion (or to its deadline) and collects what it left.
pub(super) fn run(mut job: Job<'_>) -> Result<Finished, SpawnError> {
    let (result_read, result_write) = pipe()?;
    let (diag_read, diag_write) = pipe()?;
    let mut plan = ChildPlan::new(
        job.isolate,
        job.work,
        &job.limits,
        result_write.as_raw_fd(),
        diag_write.as_raw_fd(),
    )?;
    job.command
        .arg(result_write.as_raw_fd().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: `enter` makes only system calls on data prepared above (see `child`).
    unsafe { job.command.pre_exec(move || plan.enter()) };
    let started = Instant::now();
    let spawned = job.command.spawn();
    // The parent's write ends must close so that reads see end-of-file once the sample exits.
    drop((result_write, diag_write));
    let mut child = spawned.map_err(|error| SpawnError {
        step: read_step(diag_read),
        error,
    })?;
    feed_stdin(&mut child, &job.stdin);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let cap = job.output_cap;
    let (status, deadline_hit, stdout, stderr) = std::thread::scope(|scope| {
        let out = scope.spawn(move || capture(stdout, cap));
        let err = scope.spawn(move || capture(stderr, cap));
        // Readers are joined after the wait: they see end-of-file once the sample is dead.
        let waited = wait_until(&mut child, started + job.deadline);
        let stdout = out.join().expect("capture thread");
        let stderr = err.join().expect("capture thread");
        waited.map(|(status, hit)| (status, hit, stdout, stderr))
    })?;
    let mut result = Vec::new();
    File::from(result_read)
        .take(RESULT_CAP as u64)
        .read_to_end(&mut result)?;
    Ok(Finished {
        status,
        deadline_hit,
        stdout,
        stderr,
        result,
        elapsed: started.elapsed(),
    })
}

/// The step the child reported before failing, if any.
fn read_step(diag: OwnedFd) -> Option<Step> {
    let mut code = [0u8; 1];
    match File::from(diag).read(&mut code) {
        Ok(1) => Step::from_code(code[0]),
        _ => None,
    }
}

/// Gives the launcher its nonce and closes stdin. A sample that died before reading it makes
/// the write fail, which changes nothing: it has no result either way.
fn feed_stdin(child: &mut Child, bytes: &[u8]) {
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(bytes);
    }
}

/// Reads a stream to its end, keeping the first `cap` bytes and counting the rest, so that a
/// sample printing gigabytes neither fills memory nor blocks on a full pipe.
fn capture(stream: Option<impl Read>, cap: usize) -> Captured {
    let mut captured = Captured::default();
    let Some(mut stream) = stream else {
        return captured;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let keep = n.min(cap.saturating_sub(captured.head.len()));
                captured.head.extend_from_slice(&buf[..keep]);
                captured.total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    captured
}

/// Waits for the child until `deadline`; then, or as soon as it has exited, kills its whole
/// process group and reaps it. Returns the exit status and whether the deadline was hit.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<(ExitStatus, bool)> {
    let pid = child.id() as libc::pid_t;
    let exit = ExitWatch::new(pid);
    let deadline_hit = loop {
        if exit.exited(pid)? {
            break false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break true;
        }
        exit.wait_at_most(left);
    };
    // The child is a zombie (or alive) here, so its pid, which is also its process group id,
    // cannot have been reused: the kill reaches only this sample's processes.
    // SAFETY: kill with a negative pid signals that process group; ESRCH is harmless.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let status = child.wait()?;
    Ok((status, deadline_hit))
}

/// Waits for a process to exit without reaping it: on a pidfd where the kernel has them
/// (Linux ≥ 5.3), else by short sleeps.
struct ExitWatch(Option<OwnedFd>);

impl ExitWatch {
    fn new(pid: libc::pid_t) -> Self {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        // SAFETY: a non-negative return is a fresh descriptor nothing else owns.
        Self((fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) }))
    }

    /// Whether `pid` has exited; it stays a zombie (`WNOWAIT`).
    fn exited(&self, pid: libc::pid_t) -> io::Result<bool> {
        // SAFETY: siginfo_t is plain data; zeroed is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: `info` is a live siginfo_t.
        if unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: waitid filled `info` (si_pid stays 0 when the child has not exited).
        Ok(unsafe { info.si_pid() } != 0)
    }

    fn wait_at_most(&self, left: Duration) {
        match &self.0 {
            Some(fd) => {
                let mut poll = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
                // SAFETY: one live pollfd; the pidfd becomes readable when the process exits.
                unsafe { libc::poll(&mut poll, 1, ms) };
            }
            None => std::thread::sleep(left.min(Duration::from_millis(5))),
        }
    }
}

/// The name of a signal that ended a sample.
pub(super) fn signal_name(status: &ExitStatus) -> Option<String> {
    let signal = status.signal()?;
    let name = match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGSYS => "SIGSYS",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGALRM => "SIGALRM",
        libc::SIGPIPE => "SIGPIPE",
        other => return Some(format!("signal {other}")),
    };
    Some(name.to_owned())
}
