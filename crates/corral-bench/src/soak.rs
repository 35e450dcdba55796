//! The soak: 50 services crashing, flapping and bursting at random, clients starting, stopping
//! and restarting them, while the daemon and the keeper are each `kill -9`ed every ~30 s. It
//! reports what the promises are about: lines lost (or written twice) in the numbered logs,
//! duplicate live processes of one service, processes left after `down`, the daemon's RSS over
//! time. A benchmark, not a test: it prints figures.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const HELPER: &str = r#"
import os, random, socket, sys, time
mode, name = sys.argv[1], sys.argv[2]
run = '%x' % random.getrandbits(32)
def line(i):
    sys.stdout.write(f'{name} {run} {i}\n')
if mode == 'counter':
    i = 0
    while True:
        line(i); i += 1
        sys.stdout.flush()
        time.sleep(0.002)
elif mode == 'crasher':
    time.sleep(random.uniform(0.5, 3))
    sys.exit(random.choice([1, 2, 0]))
elif mode == 'flapper':
    s = None
    port = int(os.environ['PORT'])
    while True:
        if s is None and random.random() < 0.5:
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('127.0.0.1', port)); s.listen(8)
        elif s is not None and random.random() < 0.3:
            s.close(); s = None
        time.sleep(0.5)
else:  # burster
    i = 0
    while True:
        time.sleep(random.uniform(0.5, 4))
        for _ in range(10000):
            line(i); i += 1
        sys.stdout.flush()
"#;

fn config() -> String {
    let mut c = String::new();
    for (mode, n) in [
        ("counter", 15),
        ("crasher", 10),
        ("flapper", 10),
        ("burster", 15),
    ] {
        for i in 0..n {
            let name = format!("{mode}{i}");
            c.push_str(&format!(
                "[services.{name}]\ncommand = [\"python3\", \"-u\", \"soak.py\", \"{mode}\", \"{name}\"]\nrestart = {{ mode = \"always\", max_restarts = 1000000, startup_max_restarts = 1000000, backoff_initial = \"100ms\", backoff_max = \"2s\" }}\nstop = {{ timeout = \"2s\" }}\n"
            ));
            if mode == "flapper" {
                c.push_str(
                    "ports = [\"auto\"]\nreadiness = { tcp = \"127.0.0.1:{port}\", interval = \"300ms\" }\nliveness = { tcp = \"127.0.0.1:{port}\", interval = \"500ms\", failure_threshold = 4 }\n",
                );
            }
            c.push('\n');
        }
    }
    c
}

fn corral(corral: &Path, dir: &Path, args: &[&str]) -> bool {
    Command::new(corral)
        .args(args)
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn pid_in(file: &Path) -> Option<i32> {
    fs::read_to_string(file)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Live processes carrying a corral marker whose working directory is `dir`: (pid, unit).
fn marked(dir: &Path) -> Vec<(i32, String)> {
    let root = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if fs::read_link(format!("/proc/{pid}/cwd")).map_or(true, |c| !c.starts_with(&root)) {
            continue;
        }
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if let Some(marker) = env
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"CORRAL_INSTANCE_ID="))
        {
            let unit = String::from_utf8_lossy(marker)
                .split('/')
                .nth(1)
                .unwrap_or("")
                .to_string();
            out.push((pid, unit));
        }
    }
    out
}

pub fn run(corral_bin: &Path, seconds: u64) {
    println!(
        "soak: 50 services, random clients, kill -9 of daemon and keeper every ~30 s, {seconds} s"
    );
    let dir = tempfile::Builder::new()
        .prefix("corral-soak-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    fs::write(d.join("soak.py"), HELPER).unwrap();
    fs::write(d.join("corral.toml"), config()).unwrap();
    assert!(
        corral(corral_bin, d, &["up", "-d"]),
        "the soak stack did not start"
    );
    let names: Vec<String> = config()
        .lines()
        .filter_map(|l| {
            l.strip_prefix("[services.")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect();
    let start = Instant::now();
    let mut rss = Vec::new();
    let mut duplicates = 0usize;
    let mut kills = (0, 0);
    let mut seed = std::process::id() as u64;
    let mut rand = move |n: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as usize % n
    };
    let mut next_daemon_kill = Duration::from_secs(30);
    let mut next_keeper_kill = Duration::from_secs(15);
    let mut next_sample = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(seconds) {
        // A client acts on a random service.
        let name = &names[rand(names.len())];
        let verb = ["start", "stop", "restart", "start"][rand(4)];
        corral(corral_bin, d, &[verb, name]);
        let t = start.elapsed();
        if t >= next_daemon_kill {
            if let Some(pid) = pid_in(&d.join(".corral/daemon.pid")) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                std::thread::sleep(Duration::from_millis(50));
                corral(corral_bin, d, &["up", "-d"]);
                kills.0 += 1;
            }
            next_daemon_kill += Duration::from_secs(30);
        }
        if t >= next_keeper_kill {
            if let Some(pid) = pid_in(&d.join(".corral/keeper.lock")) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                kills.1 += 1;
            }
            next_keeper_kill += Duration::from_secs(30);
        }
        if t >= next_sample {
            if let Some(pid) = pid_in(&d.join(".corral/daemon.pid")) {
                rss.push((t.as_secs(), rss_kib(pid)));
            }
            // Never two live processes of one service (the leader carries the marker first).
            let mut leaders: HashMap<String, HashSet<i32>> = HashMap::new();
            for (pid, unit) in marked(d) {
                let pgid = nix::unistd::getpgid(Some(Pid::from_raw(pid))).map_or(0, |p| p.as_raw());
                if pgid == pid {
                    leaders.entry(unit).or_default().insert(pid);
                }
            }
            duplicates += leaders.values().filter(|s| s.len() > 1).count();
            next_sample += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let down = corral(corral_bin, d, &["down"]);
    std::thread::sleep(Duration::from_millis(500));
    let left = marked(d).len();
    // Lines: per service and run (a restart is a new run), the numbers 0..=max without a gap
    // or a repeat. A run cut off by a crash may end anywhere; it may not skip.
    let (mut lost, mut repeated, mut lines) = (0u64, 0u64, 0u64);
    for name in names
        .iter()
        .filter(|n| n.starts_with("counter") || n.starts_with("burster"))
    {
        let mut runs: HashMap<String, Vec<u64>> = HashMap::new();
        for n in 0..=3 {
            let file = if n == 0 {
                d.join(format!(".corral/logs/{name}.log"))
            } else {
                d.join(format!(".corral/logs/{name}.log.{n}"))
            };
            for l in fs::read_to_string(file).unwrap_or_default().lines() {
                let mut parts = l.rsplitn(3, ' ');
                let (Some(i), Some(run)) = (parts.next(), parts.next()) else {
                    continue;
                };
                if let Ok(i) = i.parse::<u64>() {
                    runs.entry(run.to_string()).or_default().push(i);
                }
            }
        }
        for (_, mut seq) in runs {
            lines += seq.len() as u64;
            seq.sort_unstable();
            let before = seq.len();
            seq.dedup();
            repeated += (before - seq.len()) as u64;
            let (lo, hi) = (seq[0], *seq.last().unwrap_or(&0));
            // Rotation drops the oldest files: count gaps above the oldest line kept.
            lost += (hi - lo + 1) - seq.len() as u64;
        }
    }
    println!(
        "  daemon kills {}, keeper kills {}; down {}",
        kills.0,
        kills.1,
        if down { "ok" } else { "FAILED" }
    );
    println!("  lines checked {lines}: lost {lost}, written twice {repeated}");
    println!("  duplicate live processes of one service (sampled every 10 s): {duplicates}");
    println!("  processes left after down: {left}");
    let series: Vec<String> = rss
        .iter()
        .map(|(t, kib)| format!("{t}s {:.1}M", *kib as f64 / 1024.0))
        .collect();
    println!("  daemon RSS: {}", series.join(", "));
}
