//! `corral __wrap STATUS -- CMD…`: runs a task's command and, before it exits, writes how the
//! command ended to `STATUS`. corral's own children report their exit status to it; a process a
//! new daemon *adopted* after a crash is not its child, so without this its end is "unknown" — and
//! a dependent waiting for `completed_successfully` would be skipped. Only tasks are wrapped:
//! their exit code is what matters, and a service's restart does not depend on it.
//!
//! The wrapper leads the process group corral made; the command runs in it. A stop signal goes
//! to the whole group: the wrapper catches it (a no-op handler, reset to the default in the
//! command by `exec`), so it outlives its command and can record the end.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// Where a task's wrapper records how it ended: `.corral/exit/UNIT.GENERATION`.
pub fn status_path(state_dir: &Path, unit: &str, generation: u64) -> PathBuf {
    state_dir.join("exit").join(format!("{unit}.{generation}"))
}

/// How the recorded command ended: `code N` or `signal N`.
pub fn read_status(path: &Path) -> Option<corral_engine::ExitStatus> {
    let text = std::fs::read_to_string(path).ok()?;
    let (kind, n) = text.trim().split_once(' ')?;
    let n: i32 = n.parse().ok()?;
    match kind {
        "code" => Some(corral_engine::ExitStatus::Code(n)),
        "signal" => Some(corral_engine::ExitStatus::Signal(n)),
        _ => None,
    }
}

extern "C" fn caught(_: nix::libc::c_int) {}

/// Who the wrapped command runs as, when its unit has `user`/`group`/`umask`: the wrapper stays
/// corral's (root) so that it can write the status into the private state dir, and drops to
/// the unit's user in the command alone.
#[derive(Clone, Debug, Default)]
pub struct RunAs {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Vec<u32>,
    pub umask: Option<u32>,
}

impl RunAs {
    /// The `__wrap` arguments that say this.
    pub fn args(identity: Option<&corral_config::Identity>, umask: Option<u32>) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(id) = identity {
            a.extend([
                "--uid".into(),
                id.uid.to_string(),
                "--gid".into(),
                id.gid.to_string(),
            ]);
            let groups: Vec<String> = id.groups.iter().map(u32::to_string).collect();
            a.extend(["--groups".into(), groups.join(",")]);
        }
        if let Some(m) = umask {
            a.extend(["--umask".into(), format!("{m:o}")]);
        }
        a
    }
}

/// The arguments of `corral __wrap` (after it): `STATUS`, what [`RunAs::args`] writes, `--`,
/// the command. Read by hand, before the CLI's parser is built: the wrapper starts for every
/// task, and building the parser of every command was a fifth of its start.
pub fn parse_args(args: &[String]) -> Result<(PathBuf, RunAs, Vec<String>), String> {
    let (status, mut rest) = args
        .split_first()
        .ok_or("usage: corral __wrap STATUS [--uid N] [--gid N] [--groups N,…] [--umask OCTAL] -- COMMAND…")?;
    let mut run_as = RunAs::default();
    loop {
        let Some((flag, after)) = rest.split_first() else {
            return Err("no `--` before the command".into());
        };
        if flag == "--" {
            rest = after;
            break;
        }
        let value = || {
            after
                .first()
                .ok_or_else(|| format!("`{flag}` needs a value"))
        };
        let number = |radix: u32| {
            let value = value()?;
            u32::from_str_radix(value, radix).map_err(|e| format!("`{flag} {value}`: {e}"))
        };
        match flag.as_str() {
            "--uid" => run_as.uid = Some(number(10)?),
            "--gid" => run_as.gid = Some(number(10)?),
            "--umask" => run_as.umask = Some(number(8)?),
            "--groups" => {
                let value = value()?;
                run_as.groups = value
                    .split(',')
                    .filter(|g| !g.is_empty())
                    .map(|g| g.parse().map_err(|e| format!("`--groups {value}`: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown argument `{flag}`")),
        }
        let after = &after[1..];
        rest = after;
    }
    if rest.is_empty() {
        return Err("no command after `--`".into());
    }
    Ok((PathBuf::from(status), run_as, rest.to_vec()))
}

/// Run `program` with `args` as `run_as` says, and wait for it.
fn spawn_and_wait(
    program: &str,
    args: &[String],
    run_as: &RunAs,
) -> std::io::Result<std::process::ExitStatus> {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    if run_as.uid.is_some() || run_as.gid.is_some() || run_as.umask.is_some() {
        let run_as = run_as.clone();
        let groups: Vec<nix::unistd::Gid> = run_as
            .groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        // SAFETY: only system calls on data prepared before the fork.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if let Some(m) = run_as.umask {
                    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m as _));
                }
                if let Some(gid) = run_as.gid {
                    nix::unistd::setgroups(&groups)?;
                    nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
                }
                if let Some(uid) = run_as.uid {
                    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
                }
                Ok(())
            });
        }
    }
    cmd.spawn().and_then(|mut child| child.wait())
}

/// The wrapper: returns the exit code for the process (or ends by the command's signal).
pub fn main(status: &Path, argv: &[String], run_as: &RunAs) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        crate::say!("corral __wrap: nothing to run");
        return 127;
    };
    let handler = SigAction::new(
        SigHandler::Handler(caught),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        // SAFETY: the handler does nothing, which is async-signal-safe.
        let _ = unsafe { sigaction(sig, &handler) };
    }
    let ended = spawn_and_wait(program, args, run_as).or_else(|e| {
        // A script without a `#!` line: the shell runs it, as `execvp` and a shell would.
        if e.raw_os_error() == Some(nix::libc::ENOEXEC) {
            let with_sh: Vec<String> = std::iter::once(program.clone())
                .chain(args.iter().cloned())
                .collect();
            spawn_and_wait("/bin/sh", &with_sh, run_as)
        } else {
            Err(e)
        }
    });
    let ended = match ended {
        Ok(s) => s,
        Err(e) => {
            crate::say!("corral __wrap: cannot run `{program}`: {e}");
            let _ = crate::statedir::write_new(status, b"code 127\n");
            return 127;
        }
    };
    let record = match (ended.code(), ended.signal()) {
        (Some(c), _) => format!("code {c}\n"),
        (None, Some(s)) => format!("signal {s}\n"),
        _ => "code 1\n".to_string(),
    };
    let _ = crate::statedir::write_new(status, record.as_bytes());
    if let Some(sig) = ended.signal().and_then(|s| Signal::try_from(s).ok()) {
        // End the same way, so our parent sees what the command did.
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: restoring the default disposition installs no handler code.
        let _ = unsafe { sigaction(sig, &default) };
        let _ = nix::sys::signal::raise(sig);
    }
    ended.code().unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// What the supervisor writes for a task is what the wrapper reads.
    #[test]
    fn the_wrappers_arguments_read_back_as_written() {
        let identity = corral_config::Identity {
            user: "svc".into(),
            uid: 1001,
            gid: 1002,
            groups: vec![5, 27],
            home: "/home/svc".into(),
        };
        let mut args = strings(&["/s/exit/t.1"]);
        args.extend(RunAs::args(Some(&identity), Some(0o027)));
        args.extend(strings(&["--", "sh", "-c", "echo --uid 1"]));
        let (status, run_as, command) = parse_args(&args).unwrap();
        assert_eq!(status, PathBuf::from("/s/exit/t.1"));
        assert_eq!(
            (run_as.uid, run_as.gid, run_as.groups, run_as.umask),
            (Some(1001), Some(1002), vec![5, 27], Some(0o027))
        );
        assert_eq!(command, strings(&["sh", "-c", "echo --uid 1"]));
        // Nothing but the command.
        let (_, run_as, command) = parse_args(&strings(&["st", "--", "true"])).unwrap();
        assert_eq!(
            (run_as.uid, run_as.umask, command),
            (None, None, strings(&["true"]))
        );
        // An identity without supplementary groups.
        let lone = corral_config::Identity {
            groups: Vec::new(),
            ..identity
        };
        let mut args = strings(&["st"]);
        args.extend(RunAs::args(Some(&lone), None));
        args.extend(strings(&["--", "true"]));
        assert_eq!(parse_args(&args).unwrap().1.groups, Vec::<u32>::new());
    }

    #[test]
    fn bad_wrapper_arguments_are_refused_with_a_reason() {
        for (args, says) in [
            (&[][..], "usage"),
            (&["st"][..], "no `--`"),
            (&["st", "true"][..], "unknown argument `true`"),
            (&["st", "--"][..], "no command"),
            (&["st", "--uid"][..], "needs a value"),
            (&["st", "--uid", "x", "--", "true"][..], "--uid x"),
            (&["st", "--umask", "9", "--", "true"][..], "--umask 9"),
            (
                &["st", "--nice", "1", "--", "true"][..],
                "unknown argument `--nice`",
            ),
        ] {
            let e = parse_args(&strings(args)).unwrap_err();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }
}
