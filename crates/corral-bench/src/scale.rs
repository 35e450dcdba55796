//! How corral grows (`--scale`): N `sleep` services at several sizes, each measure beside its
//! baseline in the same run, and per unit, so what grows faster than N shows; `corral ps`
//! while they start. Also a chain of 1,000 services, each depending on the one before; crash
//! and adopt of the largest N; 1,000 instances; 10,000 ad-hoc processes, 100 at a time.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{
    baseline_start_stop, corral_cmd, cpu_and_rss, daemon_pid, http, median, median_run, ms,
    project, ratio, sleep_services, up_until_started, wait_running,
};

/// Resident memory (KiB) of the keeper of the project in `dir`, found by its command line.
fn keeper_rss(dir: &Path) -> u64 {
    let want = dir.join(".corral");
    let want = want.to_string_lossy();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("__keeper") && cmd.contains(want.as_ref()) {
            return cpu_and_rss(pid).1;
        }
    }
    0
}

/// Open files that `n` running services take: corral's keeper holds three per unit (two pipes
/// and a log file), plus its own few. Where this user's hard limit is lower and may be raised
/// (root, or CAP_SYS_RESOURCE: up to `fs.nr_open`), the bench raises it for itself and so for the
/// corral it starts, as `ulimit -Hn` would; otherwise says why the size does not fit.
fn make_room_for(n: usize) -> Result<(), String> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let need = n as u64 * 3 + 256;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    if soft >= need {
        return Ok(());
    }
    let hard = hard.max(need);
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| {
        format!(
            "needs {need} open files, over this user's limit of {soft} (raise `ulimit -Hn`): {e}"
        )
    })
}

fn per_unit(d: Duration, n: usize) -> String {
    format!("{:.0}µs", d.as_secs_f64() * 1e6 / n as f64)
}

pub fn run(corral: &Path, sizes: &[usize]) {
    rows(corral, sizes);
    chain(corral, 1000);
    pipeline(corral, 1000);
    if let Some(&largest) = sizes.iter().rev().find(|&&n| make_room_for(n).is_ok()) {
        ps_while_starting(corral, largest);
        adopt(corral, largest);
    }
    instances(corral, 1000);
    adhoc(corral, 10_000, 100);
    logs(corral, 1000);
}

/// The table: one row per size.
pub fn rows(corral: &Path, sizes: &[usize]) {
    println!(
        "scale: N `sleep` services (one run each; ratios against the baseline in the same run)"
    );
    println!(
        "{:>6}  {:>9} {:>9} {:>6} {:>7}  {:>9} {:>9} {:>6} {:>10} {:>7}  {:>8} {:>8} {:>9} {:>16} {:>9} {:>8}",
        "N",
        "start",
        "fork+exec",
        "ratio",
        "/unit",
        "stop",
        "kill+wait",
        "ratio",
        "in cgroups",
        "ratio",
        "ps new",
        "ps",
        "/metrics",
        "daemon (anon)",
        "keeper",
        "idle cpu"
    );
    for &n in sizes {
        if let Err(why) = make_room_for(n) {
            println!("{n:>6}  skipped: {why}");
            continue;
        }
        let dir = project(&sleep_services(n));
        let (base_start, base_stop) = baseline_start_stop(n);
        let cg_stop = crate::baseline_stop_in_cgroups(n);
        let (up, start) = up_until_started(corral, dir.path(), n);
        // With the stack up: `ps` with a new CPU/memory sample (three times, a second apart:
        // median), then four in a row that share the last sample (median), one /metrics scrape
        // with a new sample, memory, idle CPU.
        let ps_once = || {
            let t = Instant::now();
            let st = Command::new(corral)
                .arg("ps")
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
            t.elapsed()
        };
        let ps_new = median(
            (0..3)
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(1100));
                    ps_once()
                })
                .collect(),
        );
        let ps = median((0..4).map(|_| ps_once()).collect());
        std::thread::sleep(Duration::from_millis(1100));
        let t = Instant::now();
        let body = http(dir.path(), "GET", "/metrics", "");
        let scrape = t.elapsed();
        assert!(body.contains("corral_"), "{}", &body[..body.len().min(200)]);
        let pid = up.child.id();
        // Idle from here: the daemon's last look at its heap comes a second after the last
        // request (heap::settle), and belongs to that request.
        std::thread::sleep(Duration::from_millis(1500));
        let (cpu0, _) = cpu_and_rss(pid);
        let window = Duration::from_secs(2);
        std::thread::sleep(window);
        let (cpu1, rss) = cpu_and_rss(pid);
        // Of the daemon's resident memory, its own (heap, stacks) apart from the pages of its
        // binary and libraries, which it shares with the keeper and every `corral` command, and
        // of which a varying number is mapped (±1.5 MiB between runs).
        let anon = crate::status_field(pid, "RssAnon:");
        let keeper = keeper_rss(dir.path());
        let stop = up.stop();
        println!(
            "{n:>6}  {:>9} {:>9} {:>5.2}x {:>7}  {:>9} {:>9} {:>5.2}x {}  {:>8} {:>8} {:>9} {:>6.1}MiB ({:>4.1}) {:>6.1}MiB {:>7.2}%",
            ms(start),
            ms(base_start),
            ratio(start, base_start),
            per_unit(start, n),
            ms(stop),
            ms(base_stop),
            ratio(stop, base_stop),
            crate::against_cgroups(stop, cg_stop, 10),
            ms(ps_new),
            ms(ps),
            ms(scrape),
            rss as f64 / 1024.0,
            anon as f64 / 1024.0,
            keeper as f64 / 1024.0,
            (cpu1 - cpu0) / window.as_secs_f64() * 100.0,
        );
    }
}

/// `corral ps` over and over while `n` services start (a run of its own: the asking takes
/// CPU from the start): does the API keep answering?
pub fn ps_while_starting(corral: &Path, n: usize) {
    let dir = project(&sleep_services(n));
    let stop_asking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asker = {
        let (stop, dir, corral) = (
            stop_asking.clone(),
            dir.path().to_path_buf(),
            corral.to_path_buf(),
        );
        std::thread::spawn(move || {
            let mut times = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let ok = Command::new(&corral)
                    .arg("ps")
                    .current_dir(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                // Before the daemon listens, `ps` fails at once: not an answer.
                if ok {
                    times.push(t.elapsed());
                }
            }
            times
        })
    };
    let (up, start) = up_until_started(corral, dir.path(), n);
    stop_asking.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut asked = asker.join().unwrap();
    up.stop();
    asked.sort();
    match (asked.first(), asked.last()) {
        (Some(_), Some(worst)) => println!(
            "  `corral ps` while {n} start (in {}): {} answered, median {}, worst {}",
            ms(start),
            asked.len(),
            ms(median(asked.clone())),
            ms(*worst)
        ),
        _ => println!("  `corral ps` while {n} start: none answered"),
    }
}

/// `kill -9` of the daemon with `n` services running, then a new daemon until it has adopted
/// them all; against the cold start of the same stack.
pub fn adopt(corral: &Path, n: usize) {
    let dir = project(&sleep_services(n));
    let t0 = Instant::now();
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    wait_running(corral, dir.path(), n, false);
    let cold = t0.elapsed();
    let pid = daemon_pid(dir.path());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let t0 = Instant::now();
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    wait_running(corral, dir.path(), n, true);
    let adopted = t0.elapsed();
    corral_cmd(corral, dir.path(), &["down"]);
    println!(
        "  crash and adopt, {n} services: adopted in {} ({} per unit), cold start {}",
        ms(adopted),
        per_unit(adopted, n),
        ms(cold)
    );
}

/// The `"name"` of a JSON object in `body`.
fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.split(&format!("\"{name}\":\""))
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// `n` instances of a template created over the API (without waiting for each), until all
/// run; `ps`, the daemon's memory; then all deleted.
fn instances(corral: &Path, n: usize) {
    let dir = project("[templates.t]\ncommand = [\"sleep\", \"1000\"]\n");
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    let t0 = Instant::now();
    // Each request timed: the first tenth against the last says whether an instance gets
    // dearer as they grow in number.
    let mut each = Vec::with_capacity(n);
    let names: Vec<String> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let body = http(dir.path(), "POST", "/v1/instances", r#"{"template": "t"}"#);
            each.push(t.elapsed());
            field(&body, "name").to_string()
        })
        .collect();
    let tenth = (n / 10).max(1);
    let (create_first, create_last) = crate::first_and_last_tenth(&each);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let body = http(dir.path(), "GET", "/v1/services", "");
        if body.matches("\"state\":\"running\"").count() == n {
            break;
        }
        assert!(Instant::now() < deadline, "not all {n} instances ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let created = t0.elapsed();
    let t = Instant::now();
    corral_cmd(corral, dir.path(), &["ps"]);
    let ps = t.elapsed();
    let (_, rss) = cpu_and_rss(daemon_pid(dir.path()));
    let t0 = Instant::now();
    let mut each = Vec::with_capacity(n);
    // The newest first: the first deletions are among all of them, the last among few.
    for name in names.iter().rev() {
        let t = Instant::now();
        let body = http(dir.path(), "DELETE", &format!("/v1/instances/{name}"), "");
        each.push(t.elapsed());
        assert!(body.contains("message"), "{body}");
    }
    let deleted = t0.elapsed();
    let (delete_many, delete_few) = crate::first_and_last_tenth(&each);
    corral_cmd(corral, dir.path(), &["down"]);
    println!(
        "  {n} instances: created until all run {} ({} per instance; a create: {} among the first {tenth}, {} among the last), ps {}, daemon {:.1}MiB, deleted {} ({} per instance; a delete: {} among the first {tenth}, {} among the last)",
        ms(created),
        per_unit(created, n),
        ms(create_first),
        ms(create_last),
        ms(ps),
        rss as f64 / 1024.0,
        ms(deleted),
        per_unit(deleted, n),
        ms(delete_many),
        ms(delete_few),
    );
}

/// `n` ad-hoc `true` processes over the API, `batch` at a time (each batch started, then each
/// waited for), against fork+exec+wait of the same processes in batches in this process.
fn adhoc(corral: &Path, n: usize, batch: usize) {
    let dir = project("[services.s]\ncommand = [\"sleep\", \"1000\"]\n");
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    let t0 = Instant::now();
    for _ in 0..n / batch {
        let ids: Vec<String> = (0..batch)
            .map(|_| {
                let body = http(dir.path(), "POST", "/v1/procs", r#"{"command": ["true"]}"#);
                field(&body, "id").to_string()
            })
            .collect();
        for id in ids {
            let body = http(dir.path(), "GET", &format!("/v1/procs/{id}/wait"), "");
            assert!(body.contains("\"exit_code\":0"), "{body}");
        }
    }
    let took = t0.elapsed();
    let (_, rss) = cpu_and_rss(daemon_pid(dir.path()));
    corral_cmd(corral, dir.path(), &["down"]);
    let t0 = Instant::now();
    for _ in 0..n / batch {
        let mut children: Vec<std::process::Child> = (0..batch)
            .map(|_| Command::new("true").spawn().unwrap())
            .collect();
        for c in &mut children {
            assert!(c.wait().unwrap().success());
        }
    }
    let base = t0.elapsed();
    println!(
        "  {n} ad-hoc `true`, {batch} at a time: {} ({} each), fork+exec+wait {} ({} each), ratio {:.2}x; daemon {:.1}MiB after",
        ms(took),
        per_unit(took, n),
        ms(base),
        per_unit(base, n),
        ratio(took, base),
        rss as f64 / 1024.0
    );
}

/// `corral logs` over `n` idle services and one that writes 100 lines a second: a tail of all
/// of them (against `tail` of the one log that has lines), and the daemon's CPU while a
/// `logs -f` follows all of them, against the same while none does.
pub fn logs(corral: &Path, n: usize) {
    let chatty = "[services.chatty]\ncommand = [\"sh\", \"-c\", \"while true; do echo tick; sleep 0.01; done\"]\n";
    let dir = project(&format!("{chatty}{}", sleep_services(n)));
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    wait_running(corral, dir.path(), n + 1, false);
    // The idle logs are older than the tail's lines (a service's start writes nothing here).
    std::thread::sleep(Duration::from_millis(1500));
    let tail = median_run(11, || {
        let mut c = Command::new(corral);
        c.args(["logs", "-n", "100"]).current_dir(dir.path());
        c
    });
    let log = dir.path().join(".corral/logs/chatty.log");
    let base = median_run(11, || {
        let mut c = Command::new("tail");
        c.args(["-n", "100"]).arg(&log);
        c
    });
    let pid = daemon_pid(dir.path());
    let window = Duration::from_secs(3);
    let cpu_over = |window: Duration| {
        let (c0, _) = cpu_and_rss(pid);
        std::thread::sleep(window);
        (cpu_and_rss(pid).0 - c0) * 1000.0 / window.as_secs_f64()
    };
    let alone = cpu_over(window);
    let mut follower = Command::new(corral)
        .args(["logs", "-f"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let following = cpu_over(window);
    let _ = follower.kill();
    let _ = follower.wait();
    corral_cmd(corral, dir.path(), &["down"]);
    println!(
        "  logs over {n} idle services and one writing 100 lines/s: `logs -n 100` {} (`tail -n 100` of its log {}, ratio {:.1}x); daemon CPU {:.0} ms/s with a `logs -f` of all, {:.0} ms/s without",
        ms(tail),
        ms(base),
        ratio(tail, base),
        following,
        alone
    );
}

/// A chain: s1 needs s0, s2 needs s1, …: start and stop go one unit at a time.
pub fn chain(corral: &Path, n: usize) {
    let config: String = (0..n)
        .map(|i| {
            let dep = if i == 0 {
                String::new()
            } else {
                format!("depends_on = [\"s{}\"]\n", i - 1)
            };
            format!("[services.s{i}]\ncommand = [\"sleep\", \"1000\"]\n{dep}")
        })
        .collect();
    let dir = project(&config);
    let (up, start) = up_until_started(corral, dir.path(), n);
    let stop = up.stop();
    println!(
        "  a chain of {n} (each needs the one before): start {} ({} per unit), stop {} ({} per unit)",
        ms(start),
        per_unit(start, n),
        ms(stop),
        per_unit(stop, n)
    );
}

/// `corral run --sequential` of `n` tasks running `true`, one at a time (each through the
/// wrapper that records a task's end), against fork+exec+wait of `true` `n` times in turn.
pub fn pipeline(corral: &Path, n: usize) {
    let config: String = (0..n)
        .map(|i| format!("[tasks.t{i}]\ncommand = [\"true\"]\n"))
        .collect();
    let dir = project(&config);
    let t = Instant::now();
    let st = Command::new(corral)
        .args(["run", "--sequential", "-q"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let took = t.elapsed();
    assert!(st.success(), "corral run failed");
    let t = Instant::now();
    for _ in 0..n {
        assert!(Command::new("true").status().unwrap().success());
    }
    let base = t.elapsed();
    println!(
        "  {n} tasks one at a time (`run --sequential`): {} ({} per task), fork+exec+wait {} ({} each), ratio {:.2}x",
        ms(took),
        per_unit(took, n),
        ms(base),
        per_unit(base, n),
        ratio(took, base)
    );
}
