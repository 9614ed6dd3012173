//! The code sandbox against hostile samples: each fails (or is cut) on its own, the run goes
//! on, and the host is unharmed: no file appears outside the sample's directory, no connection
//! reaches a host listener, no process is left behind, memory stays bounded.
//!
//! The samples run in one test, side by side, so that the "no process left" check sees only
//! its own samples (well-behaved programs are in `code_sandbox_programs.rs`, another binary).
//! Samples that test time limits get a 1 s limit; the others a generous one, so that a loaded
//! machine cannot turn their failure into a timeout.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use metis_verify::code::sandbox::{
    Isolation, Outcome, RunResult, Sandbox, SandboxConfig, SandboxError, KILL_MARGIN, OUTPUT_CAP,
};

const TIMEOUT: Duration = Duration::from_secs(1);
const GENEROUS: Duration = Duration::from_secs(20);
/// The samples run with the short limit.
const TIMED: [&str; 3] = [
    "infinite loop",
    "loop that swallows the alarm",
    "huge output",
];
/// Scheduling slack allowed on a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

fn sandbox(timeout: Duration) -> std::sync::Arc<Sandbox> {
    let sandbox = Sandbox::new(&SandboxConfig {
        timeout,
        memory_mib: 256,
        ..SandboxConfig::default()
    })
    .unwrap_or_else(|e| panic!("this machine must support the sandbox: {e}"));
    assert_eq!(sandbox.isolation(), &Isolation::Full);
    sandbox
}

/// A path no earlier run can have created.
fn unique(dir: &Path, stem: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    dir.join(format!(
        "metis-hostile-{stem}-{}-{nanos}",
        std::process::id()
    ))
}

fn failed_with(result: &RunResult, needle: &str) -> bool {
    matches!(&result.outcome, Outcome::Failed(why) if why.contains(needle))
}

/// Processes whose parent chain leads to this test process.
fn descendants() -> Vec<u32> {
    let me = std::process::id();
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces; fields after its ')' are fixed.
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(1)?.parse().ok()
    };
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.into_iter()
        .filter(|&pid| {
            let mut p = pid;
            for _ in 0..64 {
                match parent_of(p) {
                    Some(pp) if pp == me => return pid != me,
                    Some(0) | None => return false,
                    Some(pp) => p = pp,
                }
            }
            false
        })
        .filter(|&pid| pid != me)
        .collect()
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn hostile_samples_fail_alone_and_leave_the_host_unharmed() {
    let (short, long) = (sandbox(TIMEOUT), sandbox(GENEROUS));
    let tmp_target = unique(Path::new("/tmp"), "tmp");
    let tree_target = unique(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")),
        "worktree",
    );
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let port = tcp.local_addr().unwrap().port();
    let unix_path = unique(Path::new("/tmp"), "unix");
    let unix = UnixListener::bind(&unix_path).unwrap();
    unix.set_nonblocking(true).unwrap();
    let rss_before = peak_rss_kib();

    let programs: Vec<(&str, String)> = vec![
        ("infinite loop", "while True:\n    pass\n".into()),
        (
            "loop that swallows the alarm",
            "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n"
                .into(),
        ),
        ("fork bomb", "import os\nwhile True:\n    os.fork()\n".into()),
        (
            "subprocess",
            "import subprocess\nsubprocess.run(['/bin/sh', '-c', 'true'])\n".into(),
        ),
        ("memory bomb", "x = bytearray(10**10)\n".into()),
        (
            "growing list",
            "x = []\nwhile True:\n    x.append(bytearray(10**7))\n".into(),
        ),
        (
            "huge output",
            "import sys\nchunk = 'x' * 65536\nfor _ in range(16384):\n    sys.stdout.write(chunk)\n"
                .into(),
        ),
        (
            "write under /tmp",
            format!("open({:?}, 'w').write('pwned')\n", tmp_target.to_str().unwrap()),
        ),
        (
            "write under the worktree",
            format!("open({:?}, 'w').write('pwned')\n", tree_target.to_str().unwrap()),
        ),
        (
            "connect to 1.1.1.1:53",
            "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=0.5)\n".into(),
        ),
        (
            "connect to a host listener",
            format!("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n"),
        ),
        (
            "connect to a host unix socket",
            format!(
                "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({:?})\n",
                unix_path.to_str().unwrap()
            ),
        ),
        (
            "kill every process",
            "import os, signal\nos.kill(-1, signal.SIGKILL)\n".into(),
        ),
        (
            "exit 0 before the tests",
            "import os\nos._exit(0)\n".into(),
        ),
        (
            "print a fake result",
            // Knows the protocol (the result descriptor is the launcher's last argument) but
            // not the nonce.
            "import os, sys\nos.write(int(sys.argv[-1]), b'0' * 32 + b'\\npassed')\n\
             print('passed')\nos._exit(0)\n"
                .into(),
        ),
    ];
    let started = Instant::now();
    let results: Vec<(&str, RunResult)> = std::thread::scope(|s| {
        let handles: Vec<_> = programs
            .iter()
            .map(|(name, program)| {
                let sandbox = if TIMED.contains(name) { &short } else { &long };
                (*name, s.spawn(move || sandbox.run(program)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| {
                (
                    name,
                    h.join().unwrap().unwrap_or_else(|e| panic!("{name}: {e}")),
                )
            })
            .collect()
    });
    let wall = started.elapsed();
    let get = |name: &str| &results.iter().find(|(n, _)| *n == name).unwrap().1;
    for (name, r) in &results {
        // Printing a gigabyte is not wrong in itself; it may finish within the limit.
        if *name != "huge output" {
            assert_ne!(r.outcome, Outcome::Passed, "{name}: {r:?}");
        }
    }

    // Time: the alarm stops a plain loop at the limit; the parent's deadline stops a loop that
    // catches the alarm's exception. Neither outlives the deadline by much.
    let deadline = TIMEOUT + KILL_MARGIN;
    let plain = get("infinite loop");
    assert_eq!(plain.outcome, Outcome::TimedOut);
    assert!(
        plain.elapsed >= TIMEOUT && plain.elapsed < deadline + SLACK,
        "{plain:?}"
    );
    let stubborn = get("loop that swallows the alarm");
    assert_eq!(stubborn.outcome, Outcome::TimedOut);
    assert!(
        stubborn.elapsed >= deadline && stubborn.elapsed < deadline + SLACK,
        "{stubborn:?}"
    );

    // Processes: fork and exec of a shell are refused.
    assert!(
        failed_with(get("fork bomb"), "PermissionError"),
        "{:?}",
        get("fork bomb")
    );
    assert!(
        failed_with(get("subprocess"), "PermissionError"),
        "{:?}",
        get("subprocess")
    );
    assert!(failed_with(get("kill every process"), "PermissionError"));

    // Memory.
    assert!(
        failed_with(get("memory bomb"), "MemoryError"),
        "{:?}",
        get("memory bomb")
    );
    let growing = get("growing list");
    assert!(
        failed_with(growing, "MemoryError") || matches!(growing.outcome, Outcome::Killed(_)),
        "{growing:?}"
    );

    // Output: a gigabyte is read and dropped; only the cap is kept.
    let huge = get("huge output");
    assert!(
        matches!(huge.outcome, Outcome::Passed | Outcome::TimedOut),
        "{huge:?}"
    );
    assert_eq!(huge.stdout.head.len(), OUTPUT_CAP);
    assert!(huge.stdout.total > OUTPUT_CAP as u64, "{:?}", huge.outcome);
    assert!(huge.stdout.is_truncated());
    let rss_growth_mib = (peak_rss_kib() - rss_before) / 1024;
    assert!(
        rss_growth_mib < 200,
        "peak RSS grew by {rss_growth_mib} MiB"
    );

    // Files: read-only everywhere but the sample's own directory.
    for name in ["write under /tmp", "write under the worktree"] {
        assert!(
            failed_with(get(name), "Read-only file system"),
            "{name}: {:?}",
            get(name)
        );
    }
    assert!(!tmp_target.exists() && !tree_target.exists());

    // Network: no socket at all, so no connection reaches the host.
    for name in [
        "connect to 1.1.1.1:53",
        "connect to a host listener",
        "connect to a host unix socket",
    ] {
        assert!(
            failed_with(get(name), "PermissionError"),
            "{name}: {:?}",
            get(name)
        );
    }
    assert_eq!(tcp.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(unix.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    std::fs::remove_file(&unix_path).unwrap();

    // A sample cannot pass by leaving early or by forging the result line.
    for name in ["exit 0 before the tests", "print a fake result"] {
        assert!(
            failed_with(get(name), "without reporting a result"),
            "{name}: {:?}",
            get(name)
        );
    }

    // The whole run took about one deadline (the samples ran side by side) and left nothing.
    assert!(wall < deadline * 4, "{wall:?}");
    assert_eq!(descendants(), Vec::<u32>::new(), "processes left behind");
}

#[test]
fn refusal_names_the_step_and_the_unsafe_flag() {
    let e = SandboxError::Refused {
        step: "network namespace (unshare CLONE_NEWNET)",
        detail: "Operation not permitted (os error 1)".into(),
    };
    let text = e.to_string();
    assert!(text.contains("network namespace"), "{text}");
    assert!(text.contains("code_unsafe_no_isolation"), "{text}");
}
