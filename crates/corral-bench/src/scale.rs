//! How corral grows (`--scale`): N `sleep` services at several sizes, each measure beside its
//! baseline in the same run, and per unit, so what grows faster than N shows. Also a chain of
//! 1,000 services, each depending on the one before.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{
    baseline_start_stop, cpu_and_rss, http, median, ms, project, ratio, sleep_services,
    up_until_started,
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

fn per_unit(d: Duration, n: usize) -> String {
    format!("{:.0}µs", d.as_secs_f64() * 1e6 / n as f64)
}

pub fn run(corral: &Path, sizes: &[usize]) {
    println!(
        "scale: N `sleep` services (one run each; ratios against the baseline in the same run)"
    );
    println!(
        "{:>6}  {:>9} {:>9} {:>6} {:>7}  {:>9} {:>9} {:>6}  {:>8} {:>9} {:>9} {:>9} {:>8}",
        "N",
        "start",
        "fork+exec",
        "ratio",
        "/unit",
        "stop",
        "kill+wait",
        "ratio",
        "ps",
        "/metrics",
        "daemon",
        "keeper",
        "idle cpu"
    );
    for &n in sizes {
        let dir = project(&sleep_services(n));
        let (base_start, base_stop) = baseline_start_stop(n);
        let (up, start) = up_until_started(corral, dir.path(), n);
        // With the stack up: `ps` (median of 5), one /metrics scrape, memory, idle CPU.
        let ps = median(
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    let st = Command::new(corral)
                        .arg("ps")
                        .current_dir(dir.path())
                        .stdout(Stdio::null())
                        .status()
                        .unwrap();
                    assert!(st.success());
                    t.elapsed()
                })
                .collect(),
        );
        let t = Instant::now();
        let body = http(dir.path(), "GET", "/metrics", "");
        let scrape = t.elapsed();
        assert!(body.contains("corral_"), "{}", &body[..body.len().min(200)]);
        let pid = up.child.id();
        std::thread::sleep(Duration::from_millis(500));
        let (cpu0, _) = cpu_and_rss(pid);
        let window = Duration::from_secs(2);
        std::thread::sleep(window);
        let (cpu1, rss) = cpu_and_rss(pid);
        let keeper = keeper_rss(dir.path());
        let stop = up.stop();
        println!(
            "{n:>6}  {:>9} {:>9} {:>5.2}x {:>7}  {:>9} {:>9} {:>5.2}x  {:>8} {:>9} {:>6.1}MiB {:>6.1}MiB {:>7.2}%",
            ms(start),
            ms(base_start),
            ratio(start, base_start),
            per_unit(start, n),
            ms(stop),
            ms(base_stop),
            ratio(stop, base_stop),
            ms(ps),
            ms(scrape),
            rss as f64 / 1024.0,
            keeper as f64 / 1024.0,
            (cpu1 - cpu0) / window.as_secs_f64() * 100.0,
        );
    }
    chain(corral, 1000);
}

/// A chain: s1 needs s0, s2 needs s1, …: start and stop go one unit at a time.
fn chain(corral: &Path, n: usize) {
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
