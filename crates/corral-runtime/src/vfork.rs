//! The child side of [`crate::spawn`]: a `clone(CLONE_VM | CLONE_VFORK)` child that shares
//! the daemon's memory until it calls `execve`, as glibc's `posix_spawn` does.
//!
//! Why not `std::process::Command`: std uses `posix_spawn` only when nothing must happen in the
//! child before `exec`, and corral always has something — joining the unit's cgroup (which
//! must happen before the program can fork), rlimits, a user. With a `pre_exec` step std
//! forks, and a fork copies the page tables of the whole daemon, which grow with the number of
//! units: at 2,000 services `copy_page_range` and the child's `exit_mmap` were a quarter of the
//! daemon's CPU in starting them (`perf record`, see the scale benchmark). Here the child
//! borrows the parent's memory instead; the calling thread waits until the child has called
//! `execve` (or failed), which is also what makes a failure reportable: the child writes its
//! `errno` into the shared [`Plan`] and exits.
//!
//! Everything the child uses is prepared in the parent ([`Plan`]): C strings, pointer arrays,
//! open descriptors. The child makes system calls only — no allocation, no locks, no Rust
//! code that could panic — and calls the kernel directly for credentials (glibc's `setuid`
//! would try to reach the daemon's other threads, which share its memory).

use std::ffi::{CString, c_int, c_void};
use std::io;
use std::os::fd::RawFd;

use nix::libc;

/// Everything the child does, prepared before the clone.
pub(crate) struct Plan {
    program: CString,
    /// NUL-terminated pointer arrays into `argv_own` / `env_own`.
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    _argv_own: Vec<CString>,
    _env_own: Vec<CString>,
    cwd: CString,
    /// The descriptors that become the child's 0, 1 and 2.
    stdio: [RawFd; 3],
    /// An open `cgroup.procs` of the cgroup the child joins first, if any.
    pub cgroup_procs: Option<RawFd>,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    pub umask: Option<libc::mode_t>,
    /// Supplementary groups, group, user.
    pub ids: Option<(Vec<libc::gid_t>, libc::gid_t, libc::uid_t)>,
    /// Filled in by a child that failed: the `errno` of the step that failed.
    error: c_int,
}

impl Plan {
    pub fn new(
        program: CString,
        argv: Vec<CString>,
        env: Vec<CString>,
        cwd: CString,
        stdio: [RawFd; 3],
    ) -> Plan {
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Plan {
            program,
            argv: ptrs(&argv),
            envp: ptrs(&env),
            _argv_own: argv,
            _env_own: env,
            cwd,
            stdio,
            cgroup_procs: None,
            rlimits: Vec::new(),
            umask: None,
            ids: None,
            error: 0,
        }
    }
}

/// The child's stack: it only makes system calls, so a small one will do.
const STACK: usize = 64 * 1024;

/// Start a child that carries out `plan` and becomes its program. Returns its PID once it has
/// called `execve`; if a step failed, the child has exited and been reaped, and its error is
/// returned.
pub(crate) fn spawn(plan: &mut Plan) -> io::Result<u32> {
    let mut stack = vec![0u8; STACK];
    // The stack grows down on every architecture Linux runs corral on; 16-byte aligned.
    let top = ((stack.as_mut_ptr() as usize + STACK) & !15) as *mut c_void;
    // SAFETY: signals are blocked in this thread for the clone, so no handler of the daemon's
    // runs in the child on its borrowed memory (the child resets them before unblocking); the
    // child runs `child` on its own stack with `plan`, which outlives it (CLONE_VFORK: this
    // thread waits until the child has exec'd or exited).
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (plan as *mut Plan).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        drop(stack);
        if pid < 0 {
            return Err(clone_error);
        }
        if plan.error != 0 {
            // It exited before exec: collect it here (the caller holds the reaper's lock, so the
            // reaper has not).
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            return Err(io::Error::from_raw_os_error(plan.error));
        }
        Ok(pid as u32)
    }
}

/// The child, between clone and exec. System calls only.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Plan` the parent holds (and does not touch) until we exec or exit.
    let plan = unsafe { &mut *arg.cast::<Plan>() };
    let fail = |plan: &mut Plan| -> c_int {
        plan.error = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if plan.error == 0 {
            plan.error = libc::EIO;
        }
        // SAFETY: ends the child without running anything of the parent's (no atexit).
        unsafe { libc::_exit(127) }
    };
    // SAFETY: system calls on data prepared before the clone.
    unsafe {
        // The daemon's signal handlers must not run here, nor after exec: back to the
        // defaults (SIGPIPE, which Rust ignores, too); what is ignored otherwise stays ignored.
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if (old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN)
                || sig == libc::SIGPIPE
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if let Some(fd) = plan.cgroup_procs {
            // Best effort, like before: a process outside its cgroup is still found the
            // fallback ways (group, marker, recorded tree).
            libc::write(fd, b"0".as_ptr().cast(), 1);
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(plan);
        }
        for (target, &fd) in plan.stdio.iter().enumerate() {
            let target = target as c_int;
            if fd == target {
                // Same number: dup2 would do nothing, so clear close-on-exec by hand.
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return fail(plan);
                }
            } else if libc::dup2(fd, target) < 0 {
                return fail(plan);
            }
        }
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            return fail(plan);
        }
        for &(resource, value) in &plan.rlimits {
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            if libc::setrlimit(resource, &limit) != 0 {
                return fail(plan);
            }
        }
        if let Some(mask) = plan.umask {
            libc::umask(mask);
        }
        if let Some((groups, gid, uid)) = &plan.ids {
            // Straight to the kernel: this process is one thread, whatever glibc believes.
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setgid, *gid) != 0
                || libc::syscall(libc::SYS_setuid, *uid) != 0
            {
                return fail(plan);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(
            plan.program.as_ptr(),
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
        );
        fail(plan)
    }
}
