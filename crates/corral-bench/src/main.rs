//! corral's benchmarks: the real release binary, each figure beside a baseline measured in the
//! same run (raw fork+exec, raw pipe-to-file), so that a noisy shared machine cancels out in
//! the ratio. Run with `scripts/bench` (add `--quick` for N = 10 and 200 only).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod dashboard;
mod formats;
mod scale;
mod soak;
mod tui;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let args: Vec<String> = std::env::args().collect();
    // The number given after `flag`, if it was.
    let number_after = |flag: &str| -> Option<usize> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1)?.parse().ok())
    };
    // `--instances N`: only the instance benchmark, with N instances.
    if let Some(n) = number_after("--instances") {
        instances(&corral_binary(), n);
        return;
    }
    // `--soak SECONDS`: only the soak (default 300 s).
    if let Some(i) = args.iter().position(|a| a == "--soak") {
        let seconds = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(300);
        soak::run(&corral_binary(), seconds);
        return;
    }
    // `--dashboard`: only the dashboard in a browser.
    if args.iter().any(|a| a == "--dashboard") {
        dashboard::run(&corral_binary(), 200);
        return;
    }
    // `--tui`: only the terminal UI in tmux.
    if args.iter().any(|a| a == "--tui") {
        tui::run(&corral_binary(), 200, 100_000);
        return;
    }
    // `--formats`: only reading a large process-compose file.
    if args.iter().any(|a| a == "--formats") {
        formats::run(&corral_binary(), 1000);
        return;
    }
    // `--scale`: only how corral grows with N (`--quick`: up to 2,000).
    if args.iter().any(|a| a == "--scale") {
        // `--sizes 200,5000`: only the table's rows at those sizes (to look at one closely).
        if let Some(list) = args
            .iter()
            .position(|a| a == "--sizes")
            .map(|i| args.get(i + 1).expect("--sizes: a list, e.g. 200,5000"))
        {
            let sizes: Vec<usize> = list
                .split(',')
                .map(|n| n.trim().parse().expect("--sizes: numbers, comma-separated"))
                .collect();
            scale::rows(&corral_binary(), &sizes);
            return;
        }
        // `--scale --adopt N` (crash-and-adopt of N services), `--chain N` (the start and stop
        // of a chain of N), `--pipeline N` (N tasks run one at a time), `--during N` (`ps`
        // while N start): only that, at N.
        let alone = [
            ("--adopt", scale::adopt as fn(&Path, usize)),
            ("--chain", scale::chain),
            ("--pipeline", scale::pipeline),
            ("--during", scale::ps_while_starting),
        ];
        for (flag, measure) in alone {
            if let Some(n) = number_after(flag) {
                measure(&corral_binary(), n);
                return;
            }
        }
        // `--scale --logs`: only `logs` over 1,000 services.
        if args.iter().any(|a| a == "--logs") {
            scale::logs(&corral_binary(), 1000);
            return;
        }
        let sizes: &[usize] = if quick {
            &[200, 1000, 2000]
        } else {
            &[200, 1000, 2000, 5000, 10_000]
        };
        scale::run(&corral_binary(), sizes);
        return;
    }
    // `--capture`: only capturing 200,000 lines.
    if args.iter().any(|a| a == "--capture") {
        log_capture(&corral_binary(), 200_000);
        return;
    }
    // `--logs`: only the log queries over 100,000 lines.
    if args.iter().any(|a| a == "--logs") {
        log_query(&corral_binary(), 100_000);
        return;
    }
    // `--flood`: only the restart-under-flood benchmark.
    if args.iter().any(|a| a == "--flood") {
        restart_under_flood(&corral_binary(), 5);
        return;
    }
    let corral = corral_binary();
    println!(
        "corral benchmarks ({}), {} cores",
        corral.display(),
        nproc()
    );
    println!();
    start_stop(&corral, if quick { &[10, 200] } else { &[10, 200, 1000] });
    println!();
    idle(
        &corral,
        200,
        Duration::from_secs(if quick { 3 } else { 10 }),
    );
    println!();
    log_capture(&corral, 200_000);
    println!();
    restart_latency(&corral, 50);
    println!();
    restart_under_flood(&corral, if quick { 3 } else { 5 });
    println!();
    daemon(&corral, 200);
    println!();
    log_query(&corral, 100_000);
    println!();
    metrics_scrape(&corral, 200);
    println!();
    adhoc_exec(&corral, 20);
    println!();
    instances(&corral, if quick { 30 } else { 100 });
    println!();
    formats::run(&corral, 1000);
    println!();
    dashboard::run(&corral, 200);
    println!();
    tui::run(&corral, 200, 100_000);
}

/// One HTTP/1.1 request over the project's API socket; returns the body.
fn http(dir: &Path, method: &str, path: &str, body: &str) -> String {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(dir.join(".corral/api.sock")).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// How long the API's CPU/memory sample answers later requests (see `corral_runtime::metrics`).
const SAMPLE_SHARED: Duration = Duration::from_secs(1);

/// The medians of the first and the last tenth of `each` (times of requests in order): whether
/// a request gets dearer as what it adds grows in number.
fn first_and_last_tenth(each: &[Duration]) -> (Duration, Duration) {
    let tenth = (each.len() / 10).max(1);
    (
        median(each[..tenth].to_vec()),
        median(each[each.len() - tenth..].to_vec()),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `/metrics` with `n` services, against reading every `/proc/PID/stat` in this process.
fn metrics_scrape(corral: &Path, n: usize) {
    println!("one /metrics scrape with {n} services (median of 20)");
    let dir = project(&sleep_services(n));
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    wait_running(corral, dir.path(), n, false);
    let once = || {
        let t = Instant::now();
        let text = http(dir.path(), "GET", "/metrics", "");
        assert!(text.contains("corral_service_rss_bytes"));
        t.elapsed()
    };
    // The API shares a sample for a second: scrapes a second apart scan `/proc` each time,
    // scrapes in a row (several clients) get the shared sample.
    let fresh = median(
        (0..5)
            .map(|_| {
                std::thread::sleep(SAMPLE_SHARED + Duration::from_millis(100));
                once()
            })
            .collect(),
    );
    let scrape = median((0..20).map(|_| once()).collect());
    let scan = median(
        (0..20)
            .map(|_| {
                let t = Instant::now();
                let mut bytes = 0;
                for e in fs::read_dir("/proc").unwrap().flatten() {
                    if let Ok(s) = fs::read_to_string(e.path().join("stat")) {
                        bytes += s.len();
                    }
                }
                assert!(bytes > 0);
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "  /metrics           {:>9}   read every /proc/*/stat {:>9}   ratio {:.1}x   (a new sample, median of 5)",
        ms(fresh),
        ms(scan),
        ratio(fresh, scan)
    );
    println!(
        "  /metrics           {:>9}   (within a second of another: the shared sample)",
        ms(scrape)
    );
    corral_cmd(corral, dir.path(), &["down"]);
}

/// `corral exec -- true` (CLI, API, spawn, output stream, exit) against spawning `true`.
fn adhoc_exec(corral: &Path, runs: usize) {
    println!("ad-hoc `exec -- true` round trip (median of {runs})");
    let dir = project("[services.s]\ncommand = [\"sleep\", \"1000\"]\n");
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    let d = dir.path().to_path_buf();
    let exec = median_run(runs, move || {
        let mut c = Command::new(corral);
        c.args(["exec", "--", "true"]).current_dir(&d);
        c
    });
    let base = median_run(runs, || Command::new("true"));
    println!(
        "  corral exec        {:>9}   spawn `true` {:>9}   ratio {:.1}x",
        ms(exec),
        ms(base),
        ratio(exec, base)
    );
    corral_cmd(corral, dir.path(), &["down"]);
}

/// `restart --wait` of an idle service while another service prints bursts of 200,000 lines
/// (and a `logs -f` follows them), against the same restarts with no flood: is a user's
/// command queued behind output? Restarts
/// run back to back for a few seconds, so some land in the middle of a burst; the worst case
/// shows the queueing.
fn restart_under_flood(corral: &Path, seconds: u64) {
    println!("`restart --wait` of an idle service, back to back for {seconds} s");
    let line = "x".repeat(99);
    let config = format!(
        "[services.idle]\ncommand = [\"sleep\", \"1000\"]\n\n\
         [services.flood]\n\
         command = [\"python3\", \"-c\", \"import sys, time\\nwhile True:\\n    sys.stdout.write('{line}\\\\n' * 200000); sys.stdout.flush(); time.sleep(0.3)\"]\n\
         log = {{ max_file_size = \"64MiB\", keep_files = 1 }}\n"
    );
    let dir = project(&config);
    corral_cmd(corral, dir.path(), &["up", "-d", "idle"]);
    wait_running(corral, dir.path(), 1, false);
    let d = dir.path().to_path_buf();
    let restart = || {
        let mut all = Vec::new();
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            let t = Instant::now();
            corral_cmd(corral, &d, &["restart", "idle", "--wait"]);
            all.push(t.elapsed());
        }
        all.sort();
        let p90 = all[all.len() * 9 / 10];
        (median(all.clone()), p90, *all.last().unwrap(), all.len())
    };
    let (quiet, quiet90, quiet_max, _) = restart();
    corral_cmd(corral, dir.path(), &["start", "flood", "--wait"]);
    // Somebody follows the flood (a terminal, a dashboard tab): every line is routed.
    let mut follower = Command::new(corral)
        .args(["logs", "-f", "flood"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (flood, flood90, flood_max, n) = restart();
    let _ = follower.kill();
    let _ = follower.wait();
    println!(
        "  no flood   median {:>8}  p90 {:>8}  worst {:>8}\n  flooding   median {:>8}  p90 {:>8}  worst {:>8}   ({n} restarts; median ratio {:.1}x, worst {:.1}x)",
        ms(quiet),
        ms(quiet90),
        ms(quiet_max),
        ms(flood),
        ms(flood90),
        ms(flood_max),
        ratio(flood, quiet),
        ratio(flood_max, quiet_max),
    );
    corral_cmd(corral, dir.path(), &["down"]);
}

/// Create `n` instances of a template one after another (each until its service runs), then
/// delete them all.
fn instances(corral: &Path, n: usize) {
    println!("create, start and delete {n} instances");
    let dir = project("[templates.t]\ncommand = [\"sleep\", \"1000\"]\n");
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    let mut names = Vec::new();
    let mut each = Vec::new();
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let body = http(dir.path(), "POST", "/v1/instances", r#"{"template": "t"}"#);
        let name = body
            .split("\"name\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("{body}"))
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http(dir.path(), "GET", &format!("/v1/services/{name}"), "")
            .contains("\"state\":\"running\"")
        {
            assert!(Instant::now() < deadline, "{name} never ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        each.push(t.elapsed());
        names.push(name);
    }
    let created = t0.elapsed();
    let t0 = Instant::now();
    let mut deletes = Vec::new();
    // The newest first: the first deletions are among all of them, the last among few.
    for name in names.iter().rev() {
        let t = Instant::now();
        let body = http(dir.path(), "DELETE", &format!("/v1/instances/{name}"), "");
        assert!(body.contains("message"), "{body}");
        deletes.push(t.elapsed());
    }
    let deleted = t0.elapsed();
    let (create_first, create_last) = first_and_last_tenth(&each);
    let (delete_many, delete_few) = first_and_last_tenth(&deletes);
    println!(
        "  create+start {:>9} total, {:>9} median each ({} first tenth, {} last)   delete {:>9} total, {:>9} median each ({} first tenth, {} last)",
        ms(created),
        ms(median(each)),
        ms(create_first),
        ms(create_last),
        ms(deleted),
        ms(median(deletes)),
        ms(delete_many),
        ms(delete_few),
    );
    corral_cmd(corral, dir.path(), &["down"]);
}

/// Median wall time of running `cmd` `runs` times.
fn median_run(runs: usize, mut cmd: impl FnMut() -> Command) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let out = cmd().stdout(Stdio::null()).status().unwrap();
            assert!(out.success());
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// `corral logs` over a log of `lines` lines, against `tail` / `grep` reading the same file.
fn log_query(corral: &Path, lines: usize) {
    println!("log queries over {lines} lines (median of 10)");
    let dir = project(&format!(
        "[services.s]\ncommand = \"seq 1 {lines}; exec sleep 1000\"\n"
    ));
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !corral_cmd(corral, dir.path(), &["logs", "s", "-n", "1"]).contains(&format!(" {lines}"))
    {
        assert!(Instant::now() < deadline, "the log never filled");
        std::thread::sleep(Duration::from_millis(20));
    }
    let file = dir.path().join(".corral/logs/s.log");
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let d = dir.path().to_path_buf();
        median_run(10, move || {
            let mut c = Command::new(corral);
            c.args(&args).current_dir(&d);
            c
        })
    };
    let tail = run(&["logs", "s", "-n", "100"]);
    let base_tail = median_run(10, || {
        let mut c = Command::new("tail");
        c.args(["-n", "100"]).arg(&file);
        c
    });
    println!(
        "  logs -n 100        {:>9}   tail -n 100 {:>9}   ratio {:.1}x",
        ms(tail),
        ms(base_tail),
        ratio(tail, base_tail)
    );
    let grep = run(&["logs", "s", "--grep", "^9999", "-n", "1000"]);
    let base_grep = median_run(10, || {
        let mut c = Command::new("grep");
        c.args([" 9999"]).arg(&file);
        c
    });
    println!(
        "  logs --grep        {:>9}   grep        {:>9}   ratio {:.1}x",
        ms(grep),
        ms(base_grep),
        ratio(grep, base_grep)
    );
    // A text in most lines: the last 1,000 of them (a search that rescanned the block for each
    // match went quadratic here).
    let common = run(&["logs", "s", "--grep", "99", "-n", "1000"]);
    let base_common = median_run(10, || {
        let mut c = Command::new("grep");
        c.arg("99").arg(&file);
        c
    });
    println!(
        "  logs --grep common {:>9}   grep (all)  {:>9}   ratio {:.1}x",
        ms(common),
        ms(base_common),
        ratio(common, base_common)
    );
    corral_cmd(corral, dir.path(), &["down"]);
}

/// Run `corral ARGS` in `dir` to completion; panics if it fails.
fn corral_cmd(corral: &Path, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(corral)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "corral {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Poll `corral ps --json` until `n` services run with `adopted == want_adopted`.
fn wait_running(corral: &Path, dir: &Path, n: usize, adopted: bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ps = corral_cmd(corral, dir, &["ps", "--json"]);
        let running = ps.matches("\"state\": \"running\"").count();
        let adopted_n = ps.matches("\"adopted\": true").count();
        if running == n && (!adopted || adopted_n == n) {
            return;
        }
        assert!(Instant::now() < deadline, "only {running} of {n} running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn daemon_pid(dir: &Path) -> u32 {
    fs::read_to_string(dir.join(".corral/daemon.pid"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The daemon with `n` services: `corral ps` latency (against spawning `true`), RSS with a
/// `logs -f` client attached, and the time to adopt every service after `kill -9`.
fn daemon(corral: &Path, n: usize) {
    println!("daemon with {n} services");
    let dir = project(&sleep_services(n));
    let t0 = Instant::now();
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    wait_running(corral, dir.path(), n, false);
    let cold = t0.elapsed();

    let runs = 20;
    let mut ps = Vec::new();
    let mut base = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        corral_cmd(corral, dir.path(), &["ps"]);
        ps.push(t.elapsed());
        let t = Instant::now();
        Command::new("true").status().unwrap();
        base.push(t.elapsed());
    }
    ps.sort();
    base.sort();
    let (ps, base) = (ps[runs / 2], base[runs / 2]);
    let fresh = median(
        (0..5)
            .map(|_| {
                std::thread::sleep(SAMPLE_SHARED + Duration::from_millis(100));
                let t = Instant::now();
                corral_cmd(corral, dir.path(), &["ps"]);
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "  corral ps          {:>9}   spawn `true` {:>9}   ratio {:.1}x   (in a row: the shared CPU/memory sample)",
        ms(ps),
        ms(base),
        ratio(ps, base)
    );
    println!(
        "  corral ps          {:>9}   spawn `true` {:>9}   ratio {:.1}x   (a second apart: a new sample each; median of 5)",
        ms(fresh),
        ms(base),
        ratio(fresh, base)
    );

    let mut follower = Command::new(corral)
        .args(["logs", "-f"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = daemon_pid(dir.path());
    let (_, rss) = cpu_and_rss(pid);
    let keeper = fs::read_to_string(dir.path().join(".corral/keeper.lock"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .map_or(0, |k| status_field(k, "VmRSS:"));
    println!(
        "  RSS with one `logs -f` client: daemon {:.1} MiB, keeper {:.1} MiB",
        rss as f64 / 1024.0,
        keeper as f64 / 1024.0
    );
    let _ = follower.kill();
    let _ = follower.wait();

    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    while fs::metadata(format!("/proc/{pid}")).is_ok()
        && !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let t0 = Instant::now();
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    wait_running(corral, dir.path(), n, true);
    let adopt = t0.elapsed();
    println!(
        "  adopt after kill -9 {:>9}   cold start {:>9}   ratio {:.2}x",
        ms(adopt),
        ms(cold),
        ratio(adopt, cold)
    );
    corral_cmd(corral, dir.path(), &["down"]);
}

fn corral_binary() -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    let bin = me.with_file_name("corral");
    assert!(
        bin.exists(),
        "build corral first: {} is missing (use scripts/bench)",
        bin.display()
    );
    bin
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn project(config: &str) -> BenchDir {
    let dir = tempfile::Builder::new()
        .prefix("corral-bench-")
        .tempdir()
        .unwrap();
    fs::write(dir.path().join("corral.toml"), config).unwrap();
    BenchDir(dir)
}

/// A benchmark's project directory. If corral still runs there when it goes (a failed check
/// unwinding), corral is stopped first: a stack of 5,000 services must not outlive the bench,
/// running in a directory that no longer exists.
struct BenchDir(tempfile::TempDir);

impl BenchDir {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        if self.path().join(".corral/daemon.pid").exists() {
            let _ = Command::new(corral_binary())
                .arg("down")
                .current_dir(self.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn sleep_services(n: usize) -> String {
    (0..n)
        .map(|i| format!("[services.s{i}]\ncommand = [\"sleep\", \"1000\"]\n"))
        .collect()
}

/// A running `corral up` whose stdout we read until `count` services have started.
struct Up {
    child: Child,
    drain: Option<std::thread::JoinHandle<()>>,
}

fn up_until_started(corral: &Path, dir: &Path, count: usize) -> (Up, Duration) {
    let t0 = Instant::now();
    let mut child = Command::new(corral)
        .arg("up")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut started = 0;
    let mut line = String::new();
    while started < count {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("corral exited before {count} services started");
        }
        if line.contains(": started (pid ") {
            started += 1;
        }
    }
    let took = t0.elapsed();
    // Keep reading so corral never blocks on a full pipe.
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    (
        Up {
            child,
            drain: Some(drain),
        },
        took,
    )
}

impl Up {
    fn stop(mut self) -> Duration {
        let t0 = Instant::now();
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).unwrap();
        let status = self.child.wait().unwrap();
        let took = t0.elapsed();
        assert!(status.success(), "corral exited with {status}");
        if let Some(d) = self.drain.take() {
            let _ = d.join();
        }
        took
    }
}

fn start_stop(corral: &Path, sizes: &[usize]) {
    println!("start N `sleep` services to running, then stop them all (median of 3)");
    println!(
        "{:>6}  {:>12} {:>12} {:>7}  {:>12} {:>12} {:>7}  {:>12} {:>7}",
        "N",
        "corral start",
        "fork+exec",
        "ratio",
        "corral stop",
        "kill+wait",
        "ratio",
        "in cgroups",
        "ratio"
    );
    for &n in sizes {
        let dir = project(&sleep_services(n));
        let mut runs = Vec::new();
        for _ in 0..3 {
            let (base_start, base_stop) = baseline_start_stop(n);
            let cg_stop = baseline_stop_in_cgroups(n);
            let (up, start) = up_until_started(corral, dir.path(), n);
            let stop = up.stop();
            runs.push((start, stop, base_start, base_stop, cg_stop));
        }
        runs.sort_by_key(|r| r.0);
        let (start, stop, bstart, bstop, cg_stop) = runs[1];
        println!(
            "{n:>6}  {:>12} {:>12} {:>6.2}x  {:>12} {:>12} {:>6.2}x  {}",
            ms(start),
            ms(bstart),
            ratio(start, bstart),
            ms(stop),
            ms(bstop),
            ratio(stop, bstop),
            against_cgroups(stop, cg_stop, 12)
        );
    }
}

/// The same N processes started with plain fork+exec, then SIGTERMed and waited for.
fn baseline_start_stop(n: usize) -> (Duration, Duration) {
    let t0 = Instant::now();
    let mut children: Vec<Child> = (0..n)
        .map(|_| {
            Command::new("sleep")
                .arg("1000")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let start = t0.elapsed();
    let t1 = Instant::now();
    for c in &children {
        kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM).unwrap();
    }
    for c in &mut children {
        c.wait().unwrap();
    }
    (start, t1.elapsed())
}

/// What the kernel itself takes to stop `n` processes that each live in a cgroup of their own,
/// as corral's do: SIGTERM each, wait for each, close their pipes, remove each cgroup (corral
/// must leave none behind). None where this user has no cgroup v2 to make them in (corral then uses none).
/// The processes join their cgroups by writing `cgroup.procs` before exec: slower to start than
/// corral's `CLONE_INTO_CGROUP`, but only the stop is timed.
fn baseline_stop_in_cgroups(n: usize) -> Option<Duration> {
    use std::os::unix::process::CommandExt;
    let base = own_cgroup()?.join(format!("corral-bench-{}", std::process::id()));
    fs::create_dir(&base).ok()?;
    let mut dirs = Vec::with_capacity(n);
    let mut children = Vec::with_capacity(n);
    for i in 0..n {
        let dir = base.join(format!("s{i}"));
        let made = fs::create_dir(&dir).and_then(|()| {
            fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
        });
        let Ok(procs) = made else {
            break;
        };
        dirs.push(dir);
        let mut cmd = Command::new("sleep");
        cmd.arg("1000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec the child only writes to a descriptor it inherited
        // (async-signal-safe).
        unsafe {
            cmd.pre_exec(move || {
                use std::io::Write;
                (&procs).write_all(b"0")
            });
        }
        match cmd.spawn() {
            Ok(c) => children.push(c),
            Err(_) => break,
        }
    }
    let complete = children.len() == n;
    let t0 = Instant::now();
    for c in &children {
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
    }
    for c in &mut children {
        let _ = c.wait();
    }
    // Their pipes closed, as a supervisor must (the plain kill+wait closes them untimed).
    drop(children);
    for d in &dirs {
        let _ = fs::remove_dir(d);
    }
    let took = t0.elapsed();
    let _ = fs::remove_dir(&base);
    complete.then_some(took)
}

/// A stop beside the same processes' stop in cgroups of their own: that time and the ratio,
/// or "-" (no cgroup v2 here; corral then makes none either).
fn against_cgroups(stop: Duration, in_cgroups: Option<Duration>, width: usize) -> String {
    match in_cgroups {
        Some(cg) => format!("{:>width$} {:>6.2}x", ms(cg), ratio(stop, cg)),
        None => format!("{:>width$} {:>7}", "-", "-"),
    }
}

/// This process's cgroup in the cgroup v2 hierarchy, if that is mounted (`/proc/self/cgroup`'s
/// `0::` line, under the mount point `/proc/self/mountinfo` gives for `cgroup2`).
fn own_cgroup() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut f = left.split_whitespace();
        (right.starts_with("cgroup2 ") && f.nth(3)? == "/").then(|| f.next().map(PathBuf::from))?
    })?;
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(rel.trim_start_matches('/')))
}

fn idle(corral: &Path, n: usize, window: Duration) {
    println!("corral itself with {n} idle services, over {:?}", window);
    let dir = project(&sleep_services(n));
    let (up, _) = up_until_started(corral, dir.path(), n);
    let pid = up.child.id();
    std::thread::sleep(Duration::from_millis(500)); // let start-up work settle
    let (cpu0, _) = cpu_and_rss(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let (cpu1, rss) = cpu_and_rss(pid);
    let wall = t0.elapsed();
    let hwm = status_field(pid, "VmHWM:");
    up.stop();
    let cpu_pct = (cpu1 - cpu0) / wall.as_secs_f64() * 100.0;
    println!(
        "  RSS {:.1} MiB (peak {:.1} MiB)   CPU {cpu_pct:.3} %",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}

/// CPU seconds used so far (user + system) and current RSS in KiB.
fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // After the state field (index 0): utime is field 14 of stat, i.e. index 11 here.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    (ticks / hz, status_field(pid, "VmRSS:"))
}

pub(crate) fn status_field(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn log_capture(corral: &Path, lines: usize) {
    println!("capture {lines} lines of 100 bytes (median of 5)");
    let dir = project(
        "log = { max_file_size = \"1GiB\" }\n[tasks.burst]\ncommand = [\"cat\", \"lines.txt\"]\n",
    );
    let mut text = String::with_capacity(lines * 100);
    for i in 0..lines {
        text.push_str(&format!("{i:09} {}\n", "x".repeat(89)));
    }
    fs::write(dir.path().join("lines.txt"), &text).unwrap();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let log = dir.path().join(".corral/logs/burst.log");
        let _ = fs::remove_file(&log);
        let t0 = Instant::now();
        let status = Command::new(corral)
            .args(["run", "-q"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        let corral_time = t0.elapsed();
        assert!(status.success());
        let got = fs::read_to_string(&log).unwrap();
        let (count, in_order) = check_order(&got);
        let pace = stamped_span(&got);
        let t1 = Instant::now();
        let out = dir.path().join("direct.txt");
        let status = Command::new("sh")
            .args(["-c", &format!("cat lines.txt > {}", out.display())])
            .current_dir(dir.path())
            .status()
            .unwrap();
        let direct = t1.elapsed();
        assert!(status.success());
        runs.push((corral_time, direct, count, in_order, pace));
    }
    // Each measure's own median: the direct run swings on its own (page cache, the neighbours).
    let middle = |pick: fn(&(Duration, Duration, usize, bool, Duration)) -> Duration| {
        let mut all: Vec<Duration> = runs.iter().map(pick).collect();
        all.sort();
        all[all.len() / 2]
    };
    let (t, direct, pace) = (middle(|r| r.0), middle(|r| r.1), middle(|r| r.4));
    let count = runs.iter().map(|r| r.2).min().unwrap_or(0);
    let in_order = runs.iter().all(|r| r.3);
    println!(
        "  corral: {} ({:.0} lines/s)   straight to a file: {} ({:.0} lines/s)   ratio {:.2}x",
        ms(t),
        lines as f64 / t.as_secs_f64(),
        ms(direct),
        lines as f64 / direct.as_secs_f64(),
        ratio(t, direct)
    );
    println!(
        "  lines in the log: {count}, lost: {}, in order: {in_order}   (corral's time includes its own start and stop)",
        lines - count
    );
    // The capture alone: from the first line's stamp to the last's (the keeper stamps each line
    // as it reads it), against the whole of the direct run.
    println!(
        "  the capture alone (first line's stamp to the last's): {} ({:.0} lines/s), {:.0} % of straight to a file",
        ms(pace),
        lines as f64 / pace.as_secs_f64().max(1e-3),
        100.0 * direct.as_secs_f64() / pace.as_secs_f64().max(1e-3)
    );
}

/// The time between the stamps of a log's first and last lines (millisecond stamps).
fn stamped_span(log: &str) -> Duration {
    let stamp = |line: Option<&str>| {
        line.and_then(|l| l.split(' ').next())
            .and_then(|s| humantime::parse_rfc3339(s).ok())
    };
    match (stamp(log.lines().next()), stamp(log.lines().last())) {
        (Some(a), Some(b)) => b.duration_since(a).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

/// Crash → restart with no backoff delay: the time corral adds per cycle, against a loop that
/// runs the same crashing command with fork+exec+wait.
fn restart_latency(corral: &Path, restarts: usize) {
    println!("restart a crashing service {restarts} times with no backoff delay");
    let cmd = "echo run; exit 1";
    let dir = project(&format!(
        "[services.crash]\ncommand = \"{cmd}\"\nrestart = {{ max_restarts = {restarts}, startup_max_restarts = {restarts}, backoff_initial = \"0ms\", jitter = 0.0 }}\n"
    ));
    let t0 = Instant::now();
    let status = Command::new(corral)
        .args(["up", "-q"])
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let corral_time = t0.elapsed();
    assert_eq!(status.code(), Some(1), "ends Failed");
    let runs = fs::read_to_string(dir.path().join(".corral/logs/crash.log"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(runs, restarts + 1);
    let t1 = Instant::now();
    for _ in 0..=restarts {
        Command::new("sh")
            .args(["-c", cmd])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
    }
    let direct = t1.elapsed();
    let per = corral_time / runs as u32;
    let per_direct = direct / runs as u32;
    println!(
        "  corral: {} per crash+restart ({} runs in {})   fork+exec+wait: {} per run   ratio {:.2}x",
        ms(per),
        runs,
        ms(corral_time),
        ms(per_direct),
        ratio(per, per_direct)
    );
}

fn check_order(log: &str) -> (usize, bool) {
    let mut count = 0;
    let mut in_order = true;
    for (i, line) in log.lines().enumerate() {
        let n: usize = line
            .split(' ')
            .nth(2)
            .and_then(|x| x.parse().ok())
            .unwrap_or(usize::MAX);
        in_order &= n == i;
        count += 1;
    }
    (count, in_order)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}
