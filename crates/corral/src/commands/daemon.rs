//! `corral up -d` and `corral down`: the daemon's life.
//!
//! One daemon per project: it holds `.corral/corral.lock` (an flock, gone however the process
//! dies) and writes `.corral/daemon.pid` as `PID START_TIME`, so a PID file whose process is gone
//! — or whose PID now belongs to a process that started later — is recognised as stale.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use corral_proto::client::{Client, ClientError, Method};
use corral_runtime::proctable;

use corral_api::daemon::remove_pid_file;
use corral_proto::paths::pid_file;

use super::{CliError, load_project_with, runtime};

/// The daemon named by the PID file, if that process still runs: `(pid, start time)`.
pub fn running_daemon(state_dir: &Path) -> Option<u32> {
    daemon_identity(state_dir).map(|(pid, _)| pid)
}

/// The daemon named by the PID file, if that process still runs: (pid, start time).
fn daemon_identity(state_dir: &Path) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(pid_file(state_dir)).ok()?;
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let start: u64 = parts.next()?.parse().ok()?;
    (proctable::start_time(pid as i32) == Some(start)).then_some((pid, start))
}

/// What a daemon that died mid-way left running: the processes of its records (still the same
/// process: PID and start time) with everything carrying their markers, and the keeper. Ended
/// here — TERM, then KILL after 5 s — so `down` finishes the job. Returns what was ended.
fn end_leftovers(state_dir: &Path) -> Vec<String> {
    use nix::sys::signal::Signal;
    let mut ended = Vec::new();
    if state_dir.join("state.db").exists()
        && let Ok(store) = corral_store::Store::open(state_dir)
    {
        let records = store.processes().unwrap_or_default();
        let mut pids = Vec::new();
        // What escaped them (no marker, another session) but was seen: by PID and start time.
        for (pid, start) in store.all_trees().unwrap_or_default() {
            if proctable::start_time(pid as i32) == Some(start) {
                pids.push(pid as i32);
            }
        }
        // One read of every process's environment for all the records, not one per record.
        let markers: std::collections::HashSet<&str> =
            records.iter().map(|r| r.marker.as_str()).collect();
        let mut marked = proctable::with_markers(&markers);
        for rec in &records {
            let mut tree = marked.remove(&rec.marker).unwrap_or_default();
            if proctable::start_time(rec.pid as i32) == Some(rec.start_time) {
                tree.push(rec.pid as i32);
            }
            if !tree.is_empty() {
                ended.push(format!("{} (pid {})", rec.unit, rec.pid));
                pids.extend(tree);
            }
        }
        proctable::signal_all(&pids, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && pids.iter().any(|p| proctable::start_time(*p).is_some())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let still: Vec<i32> = proctable::with_markers(&markers)
            .into_values()
            .flatten()
            .collect();
        proctable::signal_all(&still, Signal::SIGKILL);
        for rec in &records {
            let _ = store.forget_tree(&rec.unit, rec.generation);
            let _ = store.remove_process(&rec.unit, rec.generation);
        }
        proctable::signal_all(&pids, Signal::SIGKILL);
        // Where the daemon had cgroups, whatever is in them goes (nothing escapes those).
        let mut left = Vec::new();
        for name in store.previous_cgroups().unwrap_or_default() {
            let dir = Path::new(&name);
            let had: usize = corral_runtime::cgroup::children(dir)
                .iter()
                .map(|c| corral_runtime::cgroup::pids(c).len())
                .sum();
            if had > 0 {
                ended.push(format!("{had} more process(es) in {}", dir.display()));
            }
            if !corral_runtime::cgroup::end_daemon_cgroup(dir, |_| false) {
                left.push(name);
            }
        }
        let _ = store.set_cgroups(&left);
    }
    // The keeper ends by itself once no pipe is left and no daemon is connected; if it does
    // not, it goes too. Its lock file holds its PID.
    let deadline = Instant::now() + Duration::from_secs(3);
    while corral_runtime::keeper::running(state_dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if corral_runtime::keeper::running(state_dir)
        && let Ok(text) = std::fs::read_to_string(state_dir.join("keeper.lock"))
        && let Ok(pid) = text.trim().parse::<i32>()
    {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        ended.push(format!("the log keeper (pid {pid})"));
    }
    ended
}

/// The refusal of an `up -d` that lost the race to start the daemon.
fn raced(winner: Option<u64>) -> CliError {
    CliError::Run(format!(
        "a corral daemon (pid {}) already runs this project (started at the same time)\n  help: `corral ps` to see it, `corral down` to stop it",
        winner.map_or("?".to_string(), |p| p.to_string())
    ))
}

pub fn start(file: Option<&Path>, args: &super::up::UpArgs) -> Result<ExitCode, CliError> {
    let (names, listen) = (&args.names, args.listen);
    let project = load_project_with(file, &args.read_options())?;
    let state_dir = project.state_dir.clone();
    corral_runtime::statedir::ensure_dir(&state_dir)
        .map_err(|e| CliError::Run(format!("cannot use `{}`: {e}", state_dir.display())))?;
    if let Some(pid) = running_daemon(&state_dir) {
        return Err(CliError::Run(format!(
            "a corral daemon (pid {pid}) already runs this project\n  help: `corral ps` to see it, `corral down` to stop it"
        )));
    }
    if pid_file(&state_dir).exists() {
        remove_pid_file(&state_dir);
        eprintln!("corral: removed a stale PID file (its process is gone)");
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Run(format!("cannot find the corral binary: {e}")))?;
    let log_path = state_dir.join("daemon.log");
    let log = corral_runtime::statedir::open_append(&log_path)
        .map_err(|e| CliError::Run(format!("cannot open `{}`: {e}", log_path.display())))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("-f").arg(&project.file);
    for o in &args.overrides {
        cmd.arg("-f")
            .arg(std::path::absolute(o).unwrap_or_else(|_| o.clone()));
    }
    cmd.arg("up").arg("--daemon-child");
    if args.procs_anywhere {
        cmd.arg("--procs-anywhere");
    }
    if let Some(addr) = listen {
        cmd.arg("--listen").arg(addr.to_string());
    }
    if let Some(ns) = &args.namespace {
        // Checked here, so a wrong one is said by `up -d`, not in the daemon's log.
        args.units(&project)?;
        cmd.arg("--namespace").arg(ns);
    }
    if let Some(f) = &args.formation {
        let spec: Vec<String> = f.iter().map(|(k, n)| format!("{k}={n}")).collect();
        cmd.arg("--formation").arg(spec.join(","));
    }
    cmd.args(names)
        .current_dir(&project.root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| CliError::Run(e.to_string()))?)
        .stderr(log);
    // A session of its own: closing the terminal does not reach it.
    // SAFETY: setsid is async-signal-safe and touches nothing of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::Run(format!("cannot start the daemon: {e}")))?;
    let client = Client::new(&state_dir);
    let deadline = Instant::now() + Duration::from_secs(15);
    let rt = runtime()?;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read(&log_path).unwrap_or_default();
            let tail =
                String::from_utf8_lossy(&text[(log_start as usize).min(text.len())..]).into_owned();
            if tail.contains("is already running this project") {
                // Lost a race with another `up -d`: say who won, once it answers.
                let until = Instant::now() + Duration::from_secs(5);
                while Instant::now() < until {
                    let answer: Result<serde_json::Value, ClientError> =
                        rt.block_on(client.call(Method::GET, "/ready"));
                    if let Ok(a) = answer {
                        return Err(raced(a["pid"].as_u64()));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            return Err(CliError::Run(format!(
                "the daemon ended at once ({status}):\n{}",
                tail.trim_end()
            )));
        }
        let ready: Result<serde_json::Value, ClientError> =
            rt.block_on(client.call(Method::GET, "/ready"));
        if let Ok(answer) = ready {
            let answering = answer["pid"].as_u64();
            if answering == Some(u64::from(child.id())) {
                break;
            }
            // Another `up -d` won the race: ours finds the project locked and ends. Only the
            // winner says "started".
            let _ = child.wait();
            return Err(raced(answering));
        }
        if Instant::now() > deadline {
            return Err(CliError::Run(format!(
                "the daemon (pid {}) did not answer within 15 s; see {}",
                child.id(),
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // What the daemon said while it started (a limit it could not raise, more units than open
    // files allow) is for the person who started it, not only for its log.
    let text = std::fs::read(&log_path).unwrap_or_default();
    let said = String::from_utf8_lossy(&text[(log_start as usize).min(text.len())..]).into_owned();
    for line in said.lines().filter(|l| l.starts_with("corral: ")) {
        eprintln!("{line}");
    }
    println!(
        "corral: daemon started (pid {}); `corral ps` to see it, `corral logs -f` to follow, `corral down` to stop",
        child.id()
    );
    Ok(ExitCode::SUCCESS)
}

/// `down` for a daemon found only by its name ([`corral_runtime::holder`]).
fn stop_unreachable(pid: u32) -> Result<ExitCode, CliError> {
    let start = proctable::start_time(pid as i32);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|e| CliError::Run(format!("cannot signal the daemon (pid {pid}): {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while start.is_some() && proctable::start_time(pid as i32) == start {
        if Instant::now() > deadline {
            return Err(CliError::Run(format!(
                "the daemon (pid {pid}) is still stopping after 10 minutes"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("corral: stopped (pid {pid}, whose `.corral/` had been removed)");
    Ok(ExitCode::SUCCESS)
}

pub fn down(file: Option<&Path>) -> Result<ExitCode, CliError> {
    let state_dir = super::state_dir(file)?;
    let client = Client::new(&state_dir);
    let rt = runtime()?;
    let daemon = daemon_identity(&state_dir);
    let pid = daemon.map(|(pid, _)| pid);
    let asked: Result<corral_proto::wire::Done, ClientError> =
        rt.block_on(client.call(Method::POST, "/v1/shutdown"));
    match asked {
        Ok(_) => {}
        Err(ClientError::NoDaemon) => {
            // Its `.corral/` removed under it, a daemon runs on unreached: it is told to stop
            // (SIGTERM: the stack stops as at `down`), and waited for.
            if let Some(pid) = corral_runtime::holder::holder(&state_dir) {
                return stop_unreachable(pid);
            }
            let ended = end_leftovers(&state_dir);
            if ended.is_empty() {
                return Err(CliError::NoDaemon);
            } else {
                println!(
                    "corral: no daemon was running; ended what one left: {}",
                    corral_proto::some_of(&ended)
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        // It may have ended before its answer reached us: what counts is that it goes.
        Err(ClientError::Io(_)) if pid.is_some() => {}
        Err(e) => return Err(CliError::Run(e.to_string())),
    }
    // Stop takes as long as the slowest stop grace; wait for the process itself to end (its
    // PID file goes a moment before it does), so a script's next step never races it.
    let deadline = Instant::now() + Duration::from_secs(600);
    while let Some((pid, start)) = daemon
        && proctable::start_time(pid as i32) == Some(start)
    {
        if Instant::now() > deadline {
            return Err(CliError::Run(
                "the daemon is still stopping after 10 minutes".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // A daemon killed while it stopped the stack leaves the rest: finish the job.
    let ended = end_leftovers(&state_dir);
    if ended.is_empty() {
        println!("corral: stopped");
    } else {
        println!(
            "corral: stopped; the daemon ended before the stack did, so these were ended here: {}",
            corral_proto::some_of(&ended)
        );
    }
    Ok(ExitCode::SUCCESS)
}
