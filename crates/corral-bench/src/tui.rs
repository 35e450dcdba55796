//! `corral tui` in a real terminal (tmux): frame times with 200 units while a unit it follows
//! writes 100,000 lines, its CPU while idle for 10 s, and its memory.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{corral_cmd, cpu_and_rss, project, status_field, wait_running};

struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, what: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.run(&["capture-pane", "-p"]).contains(what) {
            assert!(Instant::now() < deadline, "`{what}` never showed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

pub fn run(corral: &Path, n: usize, lines: usize) {
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("tui: skipped (install tmux)");
        return;
    }
    let mut config: String = (0..n - 1)
        .map(|i| format!("[services.s{i}]\ncommand = [\"sleep\", \"1000\"]\n"))
        .collect();
    config.push_str(&format!(
        "[services.flood]\ncommand = [\"python3\", \"-c\", \"import os, sys, time\\nwhile not os.path.exists('go'): time.sleep(0.02)\\nfor i in range({lines}): sys.stdout.write(f'line {{i}} ' + 'x' * 60 + '\\\\n')\\nsys.stdout.flush()\\ntime.sleep(1000)\"]\n"
    ));
    let dir = project(&config);
    corral_cmd(corral, dir.path(), &["up", "-d"]);
    wait_running(corral, dir.path(), n, false);
    let stats = dir.path().join("tui-stats");
    let tmux = Tmux(format!("corral-bench-{}", std::process::id()));
    let cmd = format!(
        "exec env CORRAL_TUI_STATS={} {} tui",
        stats.display(),
        corral.display()
    );
    tmux.run(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-x",
        "160",
        "-y",
        "40",
        "-c",
        &dir.path().display().to_string(),
        &cmd,
    ]);
    tmux.wait_for("live", Duration::from_secs(20));
    let pid: u32 = tmux
        .run(&["display-message", "-p", "#{pane_pid}"])
        .trim()
        .parse()
        .expect("the tui's pid");
    // Follow the flooding unit (the last), then let it write.
    tmux.run(&["send-keys", "G", "Enter"]);
    tmux.wait_for("log of flood", Duration::from_secs(10));
    let t0 = Instant::now();
    std::fs::write(dir.path().join("go"), "").unwrap();
    tmux.wait_for(&format!("line {}", lines - 1), Duration::from_secs(120));
    let flood = t0.elapsed();
    // Idle: nothing happens for 10 s.
    std::thread::sleep(Duration::from_secs(1));
    let window = Duration::from_secs(10);
    let (cpu0, _) = cpu_and_rss(pid);
    std::thread::sleep(window);
    let (cpu1, rss) = cpu_and_rss(pid);
    let hwm = status_field(pid, "VmHWM:");
    tmux.run(&["send-keys", "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stats.exists() {
        assert!(Instant::now() < deadline, "the tui did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&stats).unwrap();
    let field = |k: &str| -> u64 {
        text.split_whitespace()
            .skip_while(|w| *w != k)
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    println!("corral tui in tmux (160×40), {n} units, following a unit that writes {lines} lines");
    println!(
        "  frames            {} drawn: median {:.2} ms, p99 {:.2} ms, worst {:.2} ms   ({lines} lines shown in {:.2} s)",
        field("frames"),
        field("median_us") as f64 / 1000.0,
        field("p99_us") as f64 / 1000.0,
        field("max_us") as f64 / 1000.0,
        flood.as_secs_f64()
    );
    println!(
        "  idle              CPU {:.3} % over {}s   RSS {:.1} MiB (peak {:.1} MiB)",
        (cpu1 - cpu0) / window.as_secs_f64() * 100.0,
        window.as_secs(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    drop(tmux);
    corral_cmd(corral, dir.path(), &["down"]);
}
