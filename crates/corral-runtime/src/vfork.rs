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
//! Where the kernel allows it (x86-64, Linux 5.7+), the child is made with `clone3` and
//! `CLONE_INTO_CGROUP`: it is born in its unit's cgroup. Writing `cgroup.procs` instead moves a
//! running process, which takes a lock that waits for an RCU grace period now and then (median
//! 0.1 ms, up to 16 ms measured here) and was a fifth of the time to start 200 services.
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
    /// The cgroup the child is born in (its directory, open), and its `cgroup.procs` (open for
    /// writing) for the child to join it itself where it could not be born there.
    pub cgroup: Option<(RawFd, RawFd)>,
    /// The child was born in its cgroup: it need not write itself in.
    born_in_cgroup: bool,
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
            cgroup: None,
            born_in_cgroup: false,
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
        let mut pid = -1;
        #[cfg(target_arch = "x86_64")]
        if let Some((dir, _)) = plan.cgroup {
            plan.born_in_cgroup = true;
            pid = clone3_into(plan, dir, &mut stack) as c_int;
            // Too old a kernel, a sandbox that refuses clone3, a cgroup that cannot take the
            // child: the child joins by itself below, as everywhere else.
            plan.born_in_cgroup = pid > 0;
        }
        if pid <= 0 {
            plan.error = 0;
            pid = libc::clone(
                child,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (plan as *mut Plan).cast(),
            );
        }
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

/// `clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP)` running [`child`] on `stack`: the PID,
/// or a negative errno. glibc has no wrapper that takes a stack for clone3, so the child's first
/// instructions are here: the kernel starts it at the instruction after `syscall`, on the new
/// stack, with the registers it had — `r12` and `r13` carry the plan and the function.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_into(plan: &mut Plan, cgroup_dir: RawFd, stack: &mut [u8]) -> libc::c_long {
    /// `struct clone_args` of `linux/sched.h`, up to `cgroup` (CLONE_ARGS_SIZE_VER2).
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let base = stack.as_mut_ptr() as u64;
    // The kernel starts the child at `stack + stack_size`, which must be 16-byte aligned.
    let size = ((base + stack.len() as u64) & !15) - base;
    let mut args = CloneArgs {
        flags: libc::CLONE_VM as u64 | libc::CLONE_VFORK as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: base,
        stack_size: size,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup_dir as u64,
    };
    let entry: extern "C" fn(*mut c_void) -> c_int = child;
    let ret: libc::c_long;
    // SAFETY: the parent resumes after `syscall` with only rax, rcx and r11 changed (declared);
    // the child never returns into Rust code of the parent's frame: it calls `child` (which
    // execs or exits) on its own stack, and exits if that ever returns.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, 60", // SYS_exit
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &mut args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") (plan as *mut Plan).cast::<c_void>(),
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
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
        if let Some((_, procs)) = plan.cgroup
            && !plan.born_in_cgroup
        {
            // Best effort, like before: a process outside its cgroup is still found the
            // fallback ways (group, marker, recorded tree).
            libc::write(procs, b"0".as_ptr().cast(), 1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_cgroup_the_child_cannot_be_born_in_is_joined_by_the_child_itself() {
        // A directory that is no cgroup: clone3 refuses it, and the child falls back to
        // writing itself into the "cgroup.procs" it was given (here a plain file).
        let dir = tempfile::tempdir().unwrap();
        let procs_path = dir.path().join("cgroup.procs");
        let procs = std::fs::File::create(&procs_path).unwrap();
        let dir_fd = std::fs::File::open(dir.path()).unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let c = |s: &str| CString::new(s).unwrap();
        let mut plan = Plan::new(
            c("/bin/sh"),
            vec![c("sh"), c("-c"), c("exit 7")],
            vec![c("PATH=/usr/bin:/bin")],
            c("/"),
            [devnull.as_raw_fd(); 3],
        );
        plan.cgroup = Some((dir_fd.as_raw_fd(), procs.as_raw_fd()));
        let pid = spawn(&mut plan).expect("spawned");
        assert!(!plan.born_in_cgroup);
        let mut status = 0;
        // SAFETY: waits for the child this test started.
        let waited = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        assert_eq!(waited, pid as i32);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7,
            "{status}"
        );
        assert_eq!(std::fs::read_to_string(&procs_path).unwrap(), "0");
    }

    #[test]
    fn a_failed_step_comes_back_as_the_error() {
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let c = |s: &str| CString::new(s).unwrap();
        let mut plan = Plan::new(
            c("/bin/true"),
            vec![c("true")],
            vec![],
            c("/no/such/directory"),
            [devnull.as_raw_fd(); 3],
        );
        let err = spawn(&mut plan).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    }
}
