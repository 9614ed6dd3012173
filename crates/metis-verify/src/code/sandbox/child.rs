//! What happens between `fork` and `exec` of a sample: the isolation steps, run by
//! [`ChildPlan::enter`] from [`std::os::unix::process::CommandExt::pre_exec`].
//!
//! Code here runs in a child forked from a possibly multi-threaded parent, so it only makes
//! system calls: everything it needs (paths, map contents, limits, the seccomp program) is
//! prepared by [`ChildPlan::new`] in the parent.
//!
//! The process tree of one sample:
//!
//! ```text
//! metis ─ supervisor (the spawned child: new session, namespaces created)
//!           └─ sample (pid 1 of the new pid namespace; mounts, limits, seccomp; execs Python)
//! ```
//!
//! `unshare(CLONE_NEWPID)` moves only the caller's *children* into the new pid namespace, so
//! the spawned child forks once: it stays behind as the supervisor, which waits for the sample
//! and exits the way the sample did, and the sample becomes the namespace's first process,
//! whose death takes every process of the namespace with it. The supervisor's process group
//! (its own session) holds both, so the parent kills the whole tree with one
//! `kill(-group, SIGKILL)`, and the sample also dies with its supervisor (`PR_SET_PDEATHSIG`).
//!
//! A step that fails writes its [`Step`] code to the diagnostic pipe before returning the
//! error, so the parent can say which part of the isolation the system refused.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use super::seccomp::Filter;

/// The isolation steps, in order; the code written to the diagnostic pipe is the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Step {
    Session,
    UserNamespace,
    NetworkNamespace,
    OtherNamespaces,
    Limits,
    Fork,
    ParentDeathSignal,
    PrivateMounts,
    ProcMount,
    ReadOnlyRoot,
    WorkMount,
    WorkDir,
    Capabilities,
    NoNewPrivileges,
    ResultDescriptor,
    Seccomp,
}

impl Step {
    const ALL: [Step; 16] = [
        Step::Session,
        Step::UserNamespace,
        Step::NetworkNamespace,
        Step::OtherNamespaces,
        Step::Limits,
        Step::Fork,
        Step::ParentDeathSignal,
        Step::PrivateMounts,
        Step::ProcMount,
        Step::ReadOnlyRoot,
        Step::WorkMount,
        Step::WorkDir,
        Step::Capabilities,
        Step::NoNewPrivileges,
        Step::ResultDescriptor,
        Step::Seccomp,
    ];

    pub(super) fn from_code(code: u8) -> Option<Step> {
        Step::ALL.get(usize::from(code)).copied()
    }

    /// What the step does, for error messages.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Step::Session => "new session (setsid)",
            Step::UserNamespace => "user namespace (unshare CLONE_NEWUSER, uid/gid maps)",
            Step::NetworkNamespace => "network namespace (unshare CLONE_NEWNET)",
            Step::OtherNamespaces => {
                "mount, pid, IPC and UTS namespaces (unshare CLONE_NEWNS|NEWPID|NEWIPC|NEWUTS)"
            }
            Step::Limits => "resource limits (setrlimit)",
            Step::Fork => "fork into the pid namespace",
            Step::ParentDeathSignal => "parent-death signal (prctl PR_SET_PDEATHSIG)",
            Step::PrivateMounts => "private mount propagation (mount MS_REC|MS_PRIVATE)",
            Step::ProcMount => "/proc of the new pid namespace (mount proc)",
            Step::ReadOnlyRoot => {
                "read-only file system (mount_setattr AT_RECURSIVE MOUNT_ATTR_RDONLY, Linux ≥ 5.12)"
            }
            Step::WorkMount => "writable working directory (mount tmpfs)",
            Step::WorkDir => "working directory (chdir)",
            Step::Capabilities => "dropping capabilities (capset)",
            Step::NoNewPrivileges => "no new privileges (prctl PR_SET_NO_NEW_PRIVS)",
            Step::ResultDescriptor => "result descriptor (fcntl)",
            Step::Seccomp => "system call filter (seccomp)",
        }
    }
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;

/// `_LINUX_CAPABILITY_VERSION_3` and its header and data structs (`capset(2)`).
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The uid and gid maps that make the sample root of its own user namespace (used when Metis
/// does not run as root, since only a user namespace lets it create the others).
pub(super) struct UserMaps {
    setgroups: CString,
    uid_map: CString,
    gid_map: CString,
    deny: Vec<u8>,
    uid_line: Vec<u8>,
    gid_line: Vec<u8>,
}

impl UserMaps {
    fn current() -> Self {
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Self {
            setgroups: c("/proc/self/setgroups"),
            uid_map: c("/proc/self/uid_map"),
            gid_map: c("/proc/self/gid_map"),
            deny: b"deny".to_vec(),
            uid_line: format!("0 {uid} 1").into_bytes(),
            gid_line: format!("0 {gid} 1").into_bytes(),
        }
    }
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL in a fixed path")
}

/// Everything the child needs, prepared in the parent.
pub(super) struct ChildPlan {
    /// Namespaces and mounts; without them only limits, capabilities and seccomp apply.
    isolate: bool,
    user_maps: Option<UserMaps>,
    root: CString,
    proc_dir: CString,
    proc_fs: CString,
    tmpfs: CString,
    work: CString,
    work_options: CString,
    limits: Vec<(libc::__rlimit_resource_t, libc::rlim_t)>,
    filter: Filter,
    result_fd: RawFd,
    diag_fd: RawFd,
}

/// Resource limits of a sample.
pub(super) struct Limits {
    pub cpu_seconds: u64,
    pub address_space_bytes: u64,
    pub file_size_bytes: u64,
    pub processes: u64,
    pub open_files: u64,
    /// Size of the writable tmpfs working directory.
    pub work_bytes: u64,
    pub work_inodes: u64,
}

impl ChildPlan {
    pub(super) fn new(
        isolate: bool,
        work: &std::path::Path,
        limits: &Limits,
        result_fd: RawFd,
        diag_fd: RawFd,
    ) -> io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let work = CString::new(work.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("working directory path holds a NUL byte"))?;
        // SAFETY: geteuid cannot fail and touches no memory.
        let root_user = unsafe { libc::geteuid() } == 0;
        Ok(Self {
            isolate,
            user_maps: (isolate && !root_user).then(UserMaps::current),
            root: c("/"),
            proc_dir: c("/proc"),
            proc_fs: c("proc"),
            tmpfs: c("tmpfs"),
            work,
            work_options: CString::new(format!(
                "size={},nr_inodes={},mode=0700",
                limits.work_bytes, limits.work_inodes
            ))
            .expect("no NUL in numbers"),
            limits: [
                (libc::RLIMIT_CORE, 0),
                (libc::RLIMIT_CPU, limits.cpu_seconds),
                (libc::RLIMIT_AS, limits.address_space_bytes),
                (libc::RLIMIT_FSIZE, limits.file_size_bytes),
                (libc::RLIMIT_NPROC, limits.processes),
                (libc::RLIMIT_NOFILE, limits.open_files),
            ]
            .into_iter()
            .map(|(resource, value)| (resource, value.min(hard_limit(resource))))
            .collect(),
            filter: Filter::new(),
            result_fd,
            diag_fd,
        })
    }

    /// Runs in the spawned child. Returns only in the sample process, ready to exec; the
    /// supervisor never returns from here.
    pub(super) fn enter(&mut self) -> io::Result<()> {
        self.step(Step::Session, || {
            // SAFETY: setsid takes no arguments and only changes this process's session.
            check(unsafe { libc::setsid() })
        })?;
        if self.isolate {
            if let Some(maps) = &self.user_maps {
                self.step(Step::UserNamespace, || enter_user_namespace(maps))?;
            }
            self.step(Step::NetworkNamespace, || {
                // SAFETY: unshare only changes this process's namespaces.
                check(unsafe { libc::unshare(libc::CLONE_NEWNET) })
            })?;
            self.step(Step::OtherNamespaces, || {
                let flags = libc::CLONE_NEWNS
                    | libc::CLONE_NEWPID
                    | libc::CLONE_NEWIPC
                    | libc::CLONE_NEWUTS;
                // SAFETY: as above.
                check(unsafe { libc::unshare(flags) })
            })?;
        }
        let limits = &self.limits;
        self.step(Step::Limits, || set_limits(limits))?;
        let pid = self.step(Step::Fork, fork)?;
        if pid != 0 {
            supervise(pid);
        }
        self.in_sample()
    }

    /// The sample's own steps, after the fork.
    fn in_sample(&mut self) -> io::Result<()> {
        self.step(Step::ParentDeathSignal, || {
            // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number, no pointers.
            check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) })
        })?;
        if self.isolate {
            self.mount_steps()?;
        }
        let work = self.work.as_ptr();
        self.step(Step::WorkDir, || {
            // SAFETY: `work` is a NUL-terminated path owned by the plan.
            check(unsafe { libc::chdir(work) })
        })?;
        self.step(Step::Capabilities, drop_capabilities)?;
        self.step(Step::NoNewPrivileges, || {
            // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integers only.
            check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
        })?;
        let fd = self.result_fd;
        self.step(Step::ResultDescriptor, || {
            // SAFETY: clearing FD_CLOEXEC on a descriptor this process owns, so the launcher
            // inherits it across exec.
            check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) })
        })?;
        // SAFETY: getpid cannot fail.
        let pid = unsafe { libc::getpid() };
        self.filter.set_own_pid(pid);
        let program = self.filter.fprog();
        self.step(Step::Seccomp, || {
            // SAFETY: `program` points into the filter, alive for this call; the kernel copies
            // it. No new privileges is set, as unprivileged seccomp requires.
            check(unsafe {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                )
            })
        })
    }

    /// Read-only everything, a fresh /proc, and a size-capped tmpfs as the one writable place.
    fn mount_steps(&self) -> io::Result<()> {
        let none = std::ptr::null::<libc::c_char>();
        let root = self.root.as_ptr();
        self.step(Step::PrivateMounts, || {
            // SAFETY: NUL-terminated paths owned by the plan, null where mount(2) allows it.
            // Private propagation keeps every later mount change out of the host's namespace.
            check(unsafe {
                libc::mount(
                    none,
                    root,
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            })
        })?;
        let (proc_fs, proc_dir) = (self.proc_fs.as_ptr(), self.proc_dir.as_ptr());
        self.step(Step::ProcMount, || {
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            // SAFETY: as above; a proc of this pid namespace hides the host's processes.
            check(unsafe { libc::mount(proc_fs, proc_dir, proc_fs, flags, std::ptr::null()) })
        })?;
        self.step(Step::ReadOnlyRoot, || {
            let attr = MountAttr {
                attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            // SAFETY: `root` is a NUL-terminated path and `attr` a live mount_attr of the size
            // passed.
            check(unsafe {
                libc::syscall(
                    libc::SYS_mount_setattr,
                    libc::AT_FDCWD,
                    root,
                    libc::AT_RECURSIVE,
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>(),
                ) as libc::c_int
            })
        })?;
        let (tmpfs, work, options) = (
            self.tmpfs.as_ptr(),
            self.work.as_ptr(),
            self.work_options.as_ptr(),
        );
        self.step(Step::WorkMount, || {
            let flags = libc::MS_NOSUID | libc::MS_NODEV;
            // SAFETY: NUL-terminated strings owned by the plan. Mounting onto a directory of
            // the read-only tree is allowed; the new tmpfs itself is writable.
            check(unsafe { libc::mount(tmpfs, work, tmpfs, flags, options.cast()) })
        })
    }

    /// Runs one step; on failure reports the step on the diagnostic pipe.
    fn step<T>(&self, step: Step, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        f().inspect_err(|_| {
            let code = step as u8;
            // SAFETY: writing one byte from a live local to a descriptor of this process; a
            // failed write only loses the diagnosis.
            unsafe { libc::write(self.diag_fd, (&code as *const u8).cast(), 1) };
        })
    }
}

/// The current hard limit of `resource`: an unprivileged process cannot raise it, so a lower
/// system limit wins over the sandbox's.
fn hard_limit(resource: libc::__rlimit_resource_t) -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(resource, &mut limit) } < 0 {
        return libc::RLIM_INFINITY;
    }
    limit.rlim_max
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn write_file(path: &CString, content: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; the descriptor is closed on every path below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    check(fd)?;
    // SAFETY: `content` is a live slice of the length passed.
    let written = unsafe { libc::write(fd, content.as_ptr().cast(), content.len()) };
    let result = if written < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    result
}

fn enter_user_namespace(maps: &UserMaps) -> io::Result<()> {
    // SAFETY: unshare only changes this process's namespaces.
    check(unsafe { libc::unshare(libc::CLONE_NEWUSER) })?;
    write_file(&maps.setgroups, &maps.deny)?;
    write_file(&maps.uid_map, &maps.uid_line)?;
    write_file(&maps.gid_map, &maps.gid_line)
}

fn set_limits(limits: &[(libc::__rlimit_resource_t, libc::rlim_t)]) -> io::Result<()> {
    for &(resource, value) in limits {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: `limit` is a live rlimit. Soft and hard limits are equal so that the CPU
        // limit ends in SIGKILL (a pid namespace's first process ignores SIGXCPU).
        check(unsafe { libc::setrlimit(resource, &limit) })?;
    }
    Ok(())
}

/// Forks with the raw system call: the C library's `fork` would run `atfork` handlers, which
/// are not async-signal-safe. The child gets a copy of this stack, as with `fork`.
fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: clone with only the exit signal and no new stack behaves as fork(2); both
    // processes continue here with their own copy of memory.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid as libc::pid_t)
    }
}

/// The supervisor: closes every descriptor it inherited beyond stdio (so that pipes of this
/// and of concurrent samples see end-of-file when their real holders exit), waits for the
/// sample, and ends the way the sample ended.
fn supervise(sample: libc::pid_t) -> ! {
    close_descriptors_from(3);
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live int.
        let r = unsafe { libc::waitpid(sample, &mut status, 0) };
        if r == sample {
            break;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // SAFETY: _exit never returns and is async-signal-safe.
            unsafe { libc::_exit(127) };
        }
    }
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: restoring the default action and sending the signal to this process, so the
        // parent sees the sample's death; core dumps are off (RLIMIT_CORE = 0).
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal);
        }
    }
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(libc::WEXITSTATUS(status)) }
}

fn close_descriptors_from(first: libc::c_uint) {
    // SAFETY: close_range only closes descriptors of this process.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
    if r < 0 {
        // Kernels before 5.9: close one by one up to the descriptor limit.
        for fd in first..4096 {
            // SAFETY: closing a possibly unused descriptor number is harmless.
            unsafe { libc::close(fd as libc::c_int) };
        }
    }
}

/// Drops every capability, from the bounding set too, so the sample has none even after it
/// execs a program as root.
fn drop_capabilities() -> io::Result<()> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments. EINVAL (past the last capability) and EPERM
        // (a process that cannot change its bounding set holds no capabilities to drop) are
        // expected.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    // SAFETY: as above; fails only on kernels without ambient capabilities.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: a live version-3 header and the two data structs version 3 expects.
    check(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as libc::c_int })
}
