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
//! The child shares the daemon's descriptor table too (`CLONE_FILES`) and, as its first step,
//! takes a private copy of only its low end (`close_range(CLOSE_RANGE_UNSHARE)`, Linux 5.9+),
//! where its standard streams wait in [`LowSlots`]. Otherwise a child gets a copy of the whole
//! table, which holds two pipe ends per running process, and its `execve` closes every one of
//! them: with 10,000 descriptors open that cost 0.76 ms per spawn here (`posix_spawn` of
//! `true`: 0.74 ms with few, 1.50 ms with 10,000), so starting N services was O(N²). It also
//! means a child inherits nothing of the daemon's by accident, close-on-exec or not.
//!
//! Everything the child uses is prepared in the parent ([`Plan`]): C strings, pointer arrays,
//! open descriptors. The child makes system calls only — no allocation, no locks, no Rust
//! code that could panic — and calls the kernel directly for credentials (glibc's `setuid`
//! would try to reach the daemon's other threads, which share its memory).

use std::ffi::{CString, c_int, c_uint, c_void};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::libc;

/// Everything the child does, prepared before the clone.
pub(crate) struct Plan {
    program: CString,
    /// NUL-terminated pointer arrays into `argv_own` / `env_own`.
    argv: Vec<*const libc::c_char>,
    /// `/bin/sh PROGRAM ARGS…`: what runs a program the kernel cannot (ENOEXEC: a script
    /// without a `#!` line), as `execvp` and a shell do.
    sh_argv: Vec<*const libc::c_char>,
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
    /// The kernel reset the child's signal handlers as it made it (`CLONE_CLEAR_SIGHAND`).
    born_without_handlers: bool,
    /// Whether to try clone3 at all: false only where a test takes the way of a kernel or
    /// sandbox without it.
    try_clone3: bool,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    pub umask: Option<libc::mode_t>,
    /// Supplementary groups, group, user.
    pub ids: Option<(Vec<libc::gid_t>, libc::gid_t, libc::uid_t)>,
    /// The child shares the parent's descriptor table and keeps only the descriptors below
    /// this one (see [`LowSlots`]).
    keep_below: Option<c_uint>,
    /// Filled in by a child that failed: the `errno` of the step that failed.
    error: c_int,
    /// The step that failed was taking its own descriptor table (the kernel cannot).
    unshare_failed: bool,
}

// SAFETY: the raw pointers point into the C strings the plan owns (heap buffers that stay
// where they are when the plan moves) or into static strings; nothing else is shared. A batch
// of plans is launched from several threads (`spawn::launch_all`).
unsafe impl Send for Plan {}

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
        let sh_argv = [c"/bin/sh".as_ptr(), program.as_ptr()]
            .into_iter()
            .chain(argv.iter().skip(1).map(|a| a.as_ptr()))
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        Plan {
            program,
            argv: ptrs(&argv),
            sh_argv,
            envp: ptrs(&env),
            _argv_own: argv,
            _env_own: env,
            cwd,
            stdio,
            cgroup: None,
            born_in_cgroup: false,
            born_without_handlers: false,
            try_clone3: true,
            rlimits: Vec::new(),
            umask: None,
            ids: None,
            keep_below: None,
            error: 0,
            unshare_failed: false,
        }
    }
}

/// Sets of four descriptors taken low in the daemon's table as it starts
/// ([`reserve_low_slots`], or at the first spawn) and held for good, on `/dev/null` between
/// spawns: a spawn puts the child's standard streams and its `cgroup.procs` in a set, so the
/// child, sharing the table, can copy just the part below them. Held so that nothing else gets
/// those numbers. One spawn at a time uses a set; there are [`SLOT_SETS`] so that as many
/// spawns can run side by side (a batch of units that start together is launched from several
/// threads, see `spawn::launch_all`). A child also copies the other sets, as they are at that
/// moment, and closes them with everything else above its standard streams before `exec`.
struct LowSlots {
    sets: Vec<SlotSet>,
    /// One past the highest: what the child keeps.
    below: c_uint,
    devnull: RawFd,
}

struct SlotSet {
    fds: [RawFd; 4],
    lock: Mutex<()>,
}

/// How many spawns can use the low slots at once: one more than the threads that launch a
/// batch may be (see `spawn::launch_all`), so a probe or an ad-hoc process started meanwhile
/// need not wait.
pub(crate) const SLOT_SETS: usize = 4;

/// `None`: they could not be opened; spawns copy the whole table as before.
static LOW_SLOTS: OnceLock<Option<LowSlots>> = OnceLock::new();
/// Cleared when a child found the kernel cannot give it a table of its own (before 5.9, or a
/// sandbox refusing `close_range`): the whole table is copied from then on.
static UNSHARE_WORKS: AtomicBool = AtomicBool::new(true);

fn low_slots() -> Option<&'static LowSlots> {
    LOW_SLOTS
        .get_or_init(|| {
            let open = || {
                // SAFETY: opens a descriptor this module owns for the life of the process.
                let fd =
                    unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
                (fd >= 0).then_some(fd)
            };
            let mut sets = Vec::with_capacity(SLOT_SETS);
            for _ in 0..SLOT_SETS {
                sets.push(SlotSet {
                    fds: [open()?, open()?, open()?, open()?],
                    lock: Mutex::new(()),
                });
            }
            Some(LowSlots {
                below: *sets.iter().flat_map(|s| &s.fds).max()? as c_uint + 1,
                sets,
                devnull: open()?,
            })
        })
        .as_ref()
}

/// Take the low slots now, while the table is short (a daemon that adopts thousands of
/// processes opens a pidfd for each before its first spawn).
pub(crate) fn reserve_low_slots() {
    low_slots();
}

/// The child's stack: it only makes system calls, so a small one will do.
const STACK: usize = 64 * 1024;

/// Start a child that carries out `plan` and becomes its program. Returns its PID once it has
/// called `execve`; if a step failed, the child has exited and been reaped, and its error is
/// returned.
pub(crate) fn spawn(plan: &mut Plan) -> io::Result<u32> {
    let Some(low) = low_slots().filter(|_| UNSHARE_WORKS.load(Ordering::Relaxed)) else {
        return spawn_with(plan);
    };
    // A free set, else wait for the first.
    let (set, _held) = low
        .sets
        .iter()
        .find_map(|set| match set.lock.try_lock() {
            Ok(held) => Some((set, held)),
            Err(std::sync::TryLockError::Poisoned(e)) => Some((set, e.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => None,
        })
        .unwrap_or_else(|| {
            let set = &low.sets[0];
            (set, set.lock.lock().unwrap_or_else(|e| e.into_inner()))
        });
    let (stdio, cgroup) = (plan.stdio, plan.cgroup);
    let dup_to = |fd: RawFd, slot: RawFd| {
        // SAFETY: `slot` is ours (held since `low_slots`), `fd` the caller's, open.
        (unsafe { libc::dup3(fd, slot, libc::O_CLOEXEC) } >= 0)
            .then_some(slot)
            .ok_or_else(io::Error::last_os_error)
    };
    let placed = (|| -> io::Result<()> {
        for (i, &fd) in stdio.iter().enumerate() {
            plan.stdio[i] = dup_to(fd, set.fds[i])?;
        }
        if let Some((dir, procs)) = cgroup {
            plan.cgroup = Some((dir, dup_to(procs, set.fds[3])?));
        }
        Ok(())
    })();
    let result = match placed {
        Ok(()) => {
            plan.keep_below = Some(low.below);
            spawn_with(plan)
        }
        Err(e) => Err(e),
    };
    // Back on /dev/null: a pipe's write end left in a slot would keep its reader from ever
    // seeing the end of the output.
    for slot in set.fds {
        // SAFETY: both descriptors are ours.
        unsafe { libc::dup3(low.devnull, slot, libc::O_CLOEXEC) };
    }
    (plan.stdio, plan.cgroup, plan.keep_below) = (stdio, cgroup, None);
    if plan.unshare_failed {
        // That child has exited and been reaped (`spawn_with`); this one copies the table.
        UNSHARE_WORKS.store(false, Ordering::Relaxed);
        plan.unshare_failed = false;
        return spawn_with(plan);
    }
    result
}

fn spawn_with(plan: &mut Plan) -> io::Result<u32> {
    // Only a child of this attempt sets it (an earlier attempt's may have).
    plan.error = 0;
    // Sharing the table until the child has taken its own copy of the low end.
    let files = match plan.keep_below {
        Some(_) => libc::CLONE_FILES,
        None => 0,
    };
    // Only ever written by the child (no need to zero it first).
    let mut stack: Vec<u8> = Vec::with_capacity(STACK);
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
        // clone3 born in the unit's cgroup, else clone3 without it (the child joins by
        // itself below), both with the daemon's handlers reset by the kernel; else plain clone.
        // Too old a kernel, a sandbox that refuses clone3, a cgroup that cannot take the child
        // each fall to the next.
        #[cfg(target_arch = "x86_64")]
        {
            let cgroup = plan.cgroup.map(|(dir, _)| dir);
            let tries = [cgroup, None];
            let tries = if plan.try_clone3 {
                &tries[usize::from(cgroup.is_none())..]
            } else {
                &[]
            };
            for &into in tries {
                (plan.born_in_cgroup, plan.born_without_handlers) = (into.is_some(), true);
                plan.error = 0;
                pid = clone3_child(plan, into, files as u64, stack.spare_capacity_mut()) as c_int;
                if pid > 0 {
                    break;
                }
                (plan.born_in_cgroup, plan.born_without_handlers) = (false, false);
            }
        }
        if pid <= 0 {
            plan.error = 0;
            pid = libc::clone(
                child,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | files | libc::SIGCHLD,
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

/// `clone3(CLONE_VM | CLONE_VFORK | CLONE_CLEAR_SIGHAND)`, with `CLONE_INTO_CGROUP` when given a
/// cgroup, running [`child`] on `stack`: the PID, or a negative errno. glibc has no wrapper
/// that takes a stack for clone3, so the child's first instructions are here: the kernel starts it at the instruction after `syscall`, on the new
/// stack, with the registers it had — `r12` and `r13` carry the plan and the function.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_child(
    plan: &mut Plan,
    cgroup_dir: Option<RawFd>,
    extra_flags: u64,
    stack: &mut [std::mem::MaybeUninit<u8>],
) -> libc::c_long {
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
    const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let into = match cgroup_dir {
        Some(_) => CLONE_INTO_CGROUP,
        None => 0,
    };
    let base = stack.as_mut_ptr() as u64;
    // The kernel starts the child at `stack + stack_size`, which must be 16-byte aligned.
    let size = ((base + stack.len() as u64) & !15) - base;
    let mut args = CloneArgs {
        flags: libc::CLONE_VM as u64
            | libc::CLONE_VFORK as u64
            | CLONE_CLEAR_SIGHAND
            | into
            | extra_flags,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: base,
        stack_size: size,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup_dir.unwrap_or(0) as u64,
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
        // First, before any descriptor is touched: a table of our own, with only the low end
        // of the daemon's (its standard streams and the slots holding ours).
        if let Some(below) = plan.keep_below
            && libc::syscall(
                libc::SYS_close_range,
                below,
                c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) != 0
        {
            plan.unshare_failed = true;
            return fail(plan);
        }
        // The daemon's signal handlers must not run here, nor after exec: back to the
        // defaults (SIGPIPE, which Rust ignores, too); what is ignored otherwise stays ignored.
        // Born by clone3, the kernel has done it but for SIGPIPE: one call instead of 64 (each
        // asks what a signal's handler is) while the daemon's spawning thread waits.
        if plan.born_without_handlers {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGPIPE, &dfl, std::ptr::null_mut());
        } else {
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
        if plan.keep_below.is_some() {
            // The low end of the daemon's table came along: the slots (this spawn's, now
            // copied to 0-2, and the other sets') and whatever else is down there. Nothing of
            // it is the program's.
            libc::syscall(libc::SYS_close_range, 3 as c_uint, c_uint::MAX, 0 as c_uint);
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
        if *libc::__errno_location() == libc::ENOEXEC {
            libc::execve(
                c"/bin/sh".as_ptr(),
                plan.sh_argv.as_ptr(),
                plan.envp.as_ptr(),
            );
            *libc::__errno_location() = libc::ENOEXEC;
        }
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
    fn the_child_gets_its_streams_and_nothing_else_of_the_parents_table() {
        // As in the daemon, the slots are taken while the table is short; then a pipe without
        // close-on-exec: a child with a copy of the whole table would keep it across exec.
        // Only 0, 1 and 2 may reach the program (it lists where its descriptors lead).
        assert!(low_slots().is_some());
        let (leak_r, _leak_w) = nix::unistd::pipe().unwrap();
        let leak = std::fs::read_link(format!("/proc/self/fd/{}", leak_r.as_raw_fd())).unwrap();
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let c = |s: &str| CString::new(s).unwrap();
        let mut plan = Plan::new(
            c("/bin/sh"),
            vec![c("sh"), c("-c"), c("exec ls -l /proc/self/fd/")],
            vec![c("PATH=/usr/bin:/bin")],
            c("/"),
            [devnull.as_raw_fd(), out_w.as_raw_fd(), out_w.as_raw_fd()],
        );
        let pid = spawn(&mut plan).expect("spawned");
        // Ours closes here; the slots let go of theirs in `spawn`: the read sees the end.
        drop(out_w);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(out_r), &mut out).unwrap();
        let mut status = 0;
        // SAFETY: waits for the child this test started.
        assert_eq!(
            unsafe { libc::waitpid(pid as i32, &mut status, 0) },
            pid as i32
        );
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{out}"
        );
        assert!(
            !out.contains(leak.to_str().unwrap()),
            "the parent's pipe reached the child: {out}"
        );
        // 0, 1, 2 and the directory `ls` reads.
        let fds: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_once(" -> ")?.0.split_whitespace().last())
            .collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{out}");
    }

    /// A program starts with what the daemon ignores still ignored, but SIGPIPE (which Rust
    /// ignores for itself) back to its default; the kernel resets the handlers (clone3 with
    /// `CLONE_CLEAR_SIGHAND`, which this machine has) and the child SIGPIPE.
    #[test]
    fn a_child_keeps_ignored_signals_but_gets_sigpipe_back() {
        // Made by clone3 (the kernel resets the handlers), and by plain clone (the child
        // does, for a kernel or sandbox without clone3).
        for try_clone3 in [true, false] {
            child_signals(try_clone3);
        }
    }

    fn child_signals(try_clone3: bool) {
        let ignore = |sig: libc::c_int, how: libc::sighandler_t| {
            // SAFETY: sets a disposition of this test process, nothing else.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = how;
                libc::sigaction(sig, &act, std::ptr::null_mut());
            }
        };
        ignore(libc::SIGPIPE, libc::SIG_IGN);
        ignore(libc::SIGUSR2, libc::SIG_IGN);
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let c = |s: &str| CString::new(s).unwrap();
        let mut plan = Plan::new(
            c("/bin/cat"),
            vec![c("cat"), c("/proc/self/status")],
            vec![],
            c("/"),
            [devnull.as_raw_fd(), out_w.as_raw_fd(), out_w.as_raw_fd()],
        );
        plan.try_clone3 = try_clone3;
        let pid = spawn(&mut plan).expect("spawned");
        ignore(libc::SIGUSR2, libc::SIG_DFL);
        assert_eq!(
            plan.born_without_handlers, try_clone3,
            "clone3 made the child"
        );
        drop(out_w);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(out_r), &mut out).unwrap();
        let mut status = 0;
        // SAFETY: waits for the child this test started.
        unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        let ignored = out
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .expect(&out);
        let bit = |sig: libc::c_int| ignored & (1 << (sig - 1)) != 0;
        assert!(bit(libc::SIGUSR2), "still ignored: {ignored:x}");
        assert!(
            !bit(libc::SIGPIPE),
            "SIGPIPE back to its default: {ignored:x}"
        );
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
