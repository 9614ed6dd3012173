//! The seccomp filter every sample runs under: the system calls HumanEval code never needs and
//! a hostile sample would use to leave its sandbox or harm the host.
//!
//! It stops, whatever else the platform allows:
//! - **new processes**: `fork`, `vfork`, `clone` without `CLONE_THREAD` fail with `EPERM`
//!   (threads stay possible; `clone3`, whose flags a filter cannot read, fails with `ENOSYS`,
//!   and the C library then falls back to `clone`). Upstream's `reliability_guard` disables
//!   `os.fork` and `subprocess.Popen` for the same reason. This is what contains a fork bomb
//!   when the sample runs as root, whom the kernel exempts from `RLIMIT_NPROC`;
//! - **sockets**: `socket` fails with `EPERM` (the network namespace already has no route; this
//!   also closes Unix sockets on the host's filesystem, which a read-only mount does not);
//!   `io_uring_setup` fails with `ENOSYS` (io_uring requests bypass seccomp);
//! - **signals to other processes**: `kill`, `tkill`, `tgkill` only reach the sample itself
//!   (its pid is patched in after the fork, [`Filter::set_own_pid`]); `pidfd_open` and
//!   `pidfd_send_signal` fail;
//! - **namespace and mount changes, tracing and kernel interfaces**: `ptrace`, `unshare`,
//!   `setns`, `mount`, `umount2`, `pivot_root`, `bpf`, `perf_event_open`, `userfaultfd`,
//!   `keyctl`, `add_key`, `request_key`, `process_vm_readv`, `process_vm_writev`.
//!
//! A system call of another architecture (x86's 32-bit and x32 ABIs) kills the process.

use libc::{sock_filter, sock_fprog};

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// x32 system calls are x86-64 numbers with this bit set.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Offsets in `struct seccomp_data`: nr (u32), arch (u32), instruction_pointer (u64), args.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
/// The low 32 bits of the first argument (little-endian).
const OFFSET_ARG0_LOW: u32 = 16;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
#[cfg(target_arch = "x86_64")]
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

const fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

const fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn nr(n: libc::c_long) -> u32 {
    u32::try_from(n).expect("system call numbers are small")
}

/// Calls that fail with the given errno, whatever their arguments.
fn refused() -> Vec<(libc::c_long, i32)> {
    let mut calls = vec![
        (libc::SYS_clone3, libc::ENOSYS),
        (libc::SYS_io_uring_setup, libc::ENOSYS),
        (libc::SYS_socket, libc::EPERM),
        (libc::SYS_pidfd_open, libc::EPERM),
        (libc::SYS_pidfd_send_signal, libc::EPERM),
        (libc::SYS_ptrace, libc::EPERM),
        (libc::SYS_unshare, libc::EPERM),
        (libc::SYS_setns, libc::EPERM),
        (libc::SYS_mount, libc::EPERM),
        (libc::SYS_umount2, libc::EPERM),
        (libc::SYS_pivot_root, libc::EPERM),
        (libc::SYS_bpf, libc::EPERM),
        (libc::SYS_perf_event_open, libc::EPERM),
        (libc::SYS_userfaultfd, libc::EPERM),
        (libc::SYS_keyctl, libc::EPERM),
        (libc::SYS_add_key, libc::EPERM),
        (libc::SYS_request_key, libc::EPERM),
        (libc::SYS_process_vm_readv, libc::EPERM),
        (libc::SYS_process_vm_writev, libc::EPERM),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        (libc::SYS_fork, libc::EPERM),
        (libc::SYS_vfork, libc::EPERM),
    ]);
    calls
}

/// The compiled filter, with the slots that must hold the sample's own pid.
pub(super) struct Filter {
    program: Vec<sock_filter>,
    pid_slots: Vec<usize>,
}

impl Filter {
    pub(super) fn new() -> Self {
        let mut program = vec![
            stmt(LD_ABS, OFFSET_ARCH),
            jump(JEQ, AUDIT_ARCH, 1, 0),
            stmt(RET, KILL),
            stmt(LD_ABS, OFFSET_NR),
        ];
        #[cfg(target_arch = "x86_64")]
        program.extend([
            jump(JGE, X32_SYSCALL_BIT, 0, 1),
            stmt(RET, errno(libc::ENOSYS)),
        ]);
        for (call, e) in refused() {
            program.extend([jump(JEQ, nr(call), 0, 1), stmt(RET, errno(e))]);
        }
        // Signals: allowed only when the first argument (pid or thread-group id) is the
        // sample's own pid, patched in by `set_own_pid`.
        let mut pid_slots = Vec::new();
        for call in [libc::SYS_kill, libc::SYS_tkill, libc::SYS_tgkill] {
            program.extend([jump(JEQ, nr(call), 0, 4), stmt(LD_ABS, OFFSET_ARG0_LOW)]);
            pid_slots.push(program.len());
            program.extend([
                jump(JEQ, 0, 0, 1),
                stmt(RET, ALLOW),
                stmt(RET, errno(libc::EPERM)),
            ]);
        }
        // clone: threads only. Last, because it overwrites the accumulator with an argument.
        program.extend([
            jump(JEQ, nr(libc::SYS_clone), 0, 3),
            stmt(LD_ABS, OFFSET_ARG0_LOW),
            jump(JSET, libc::CLONE_THREAD as u32, 1, 0),
            stmt(RET, errno(libc::EPERM)),
            stmt(RET, ALLOW),
        ]);
        Self { program, pid_slots }
    }

    /// Writes the sample's pid into the signal rules. Runs in the forked child: no allocation.
    pub(super) fn set_own_pid(&mut self, pid: libc::pid_t) {
        for &slot in &self.pid_slots {
            self.program[slot].k = pid as u32;
        }
    }

    /// The `sock_fprog` the kernel reads; valid while `self` is.
    pub(super) fn fprog(&mut self) -> sock_fprog {
        sock_fprog {
            len: u16::try_from(self.program.len()).expect("a short filter"),
            filter: self.program.as_mut_ptr(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.program.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small interpreter of the classic-BPF subset the filter uses.
    fn run(filter: &Filter, nr: u32, arch: u32, arg0: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[16..24].copy_from_slice(&arg0.to_le_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = filter.program[pc];
            match ins.code {
                LD_ABS => {
                    let k = ins.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                    pc += 1;
                }
                RET => return ins.k,
                code => {
                    let taken = match code {
                        JEQ => acc == ins.k,
                        JSET => acc & ins.k != 0,
                        #[cfg(target_arch = "x86_64")]
                        JGE => acc >= ins.k,
                        other => panic!("unexpected opcode {other:#x}"),
                    };
                    pc += 1 + usize::from(if taken { ins.jt } else { ins.jf });
                }
            }
        }
    }

    #[test]
    fn filter_decisions() {
        let mut f = Filter::new();
        f.set_own_pid(42);
        let call = |n: libc::c_long, arg0: u64| run(&f, nr(n), AUDIT_ARCH, arg0);
        assert_eq!(call(libc::SYS_read, 0), ALLOW);
        assert_eq!(call(libc::SYS_socket, 2), errno(libc::EPERM));
        assert_eq!(call(libc::SYS_clone3, 0), errno(libc::ENOSYS));
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(call(libc::SYS_clone, thread), ALLOW);
        assert_eq!(
            call(libc::SYS_clone, libc::SIGCHLD as u64),
            errno(libc::EPERM)
        );
        assert_eq!(call(libc::SYS_kill, 42), ALLOW);
        assert_eq!(
            call(libc::SYS_kill, u64::MAX),
            errno(libc::EPERM),
            "kill(-1)"
        );
        assert_eq!(call(libc::SYS_tgkill, 7), errno(libc::EPERM));
        assert_eq!(run(&f, nr(libc::SYS_read), 0x4000_0003, 0), KILL, "i386");
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(call(libc::SYS_fork, 0), errno(libc::EPERM));
            assert_eq!(
                run(&f, X32_SYSCALL_BIT | 1, AUDIT_ARCH, 0),
                errno(libc::ENOSYS)
            );
        }
        assert!(f.len() < 255, "jump offsets fit");
    }
}
