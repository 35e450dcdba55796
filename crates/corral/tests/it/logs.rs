//! Logs: complete, in order, never blocked by the terminal.

use std::time::Duration;

use crate::harness::*;

#[test]
fn a_200k_line_burst_lands_complete_and_in_order() {
    let p = Project::new(
        r#"
log = { max_file_size = "100MiB" }

[tasks.burst]
command = ["python3", "-c", "import sys\nw = sys.stdout.write\nfor i in range(200000): w(f'line {i:06} ' + 'x' * 88 + '\\n')"]

[tasks.other]
command = "echo other ran"
"#,
    );
    // Not quiet: the terminal printer is in the path too and may drop display lines, the file not.
    let (status, out, _) = p.run(&["run"]);
    assert!(status.success(), "{out}");
    let log = p.read(".corral/logs/burst.log");
    let mut n = 0;
    for (i, line) in log.lines().enumerate() {
        let text = line.splitn(3, ' ').nth(2).unwrap();
        assert_eq!(&text[..12], format!("line {i:06} "), "line {i}");
        assert_eq!(text.len(), 100);
        assert!(line.split(' ').nth(1) == Some("out"));
        n += 1;
    }
    assert_eq!(n, 200_000);
    assert!(p.read(".corral/logs/other.log").contains("out other ran"));
}

#[test]
fn stderr_is_tagged_and_long_lines_are_split_not_dropped() {
    let p = Project::new(
        r#"
[tasks.t]
command = ["python3", "-c", "import sys\nprint('to-err', file=sys.stderr)\nprint('y' * 200000)\nprint('after')"]
"#,
    );
    let (status, out, _) = p.run(&["run", "-q"]);
    assert!(status.success(), "{out}");
    let log = p.read(".corral/logs/t.log");
    let texts: Vec<(&str, &str)> = log
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, ' ');
            f.next();
            (f.next().unwrap(), f.next().unwrap_or(""))
        })
        .collect();
    assert!(texts.contains(&("err", "to-err")));
    let ys: String = texts
        .iter()
        .filter(|(_, t)| t.starts_with('y'))
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(ys.len(), 200000);
    assert_eq!(
        texts.iter().filter(|(_, t)| t.starts_with('y')).count(),
        4,
        "64 KiB pieces"
    );
    assert_eq!(texts.last().unwrap().1, "after");
    let _ = Duration::ZERO;
}

#[test]
fn a_flooding_service_does_not_hold_up_another() {
    let p = Project::new(
        r#"
[services.flood]
command = "yes flood"

[services.ticker]
command = "for i in 1 2 3 4 5; do echo tick $i; sleep 0.05; done; sleep 30"
"#,
    );
    let mut c = p.start(&["up"]);
    // The ticker's lines reach its log file on time even while `yes` floods.
    eventually(Duration::from_secs(20), "ticker logged 5 ticks", || {
        p.read(".corral/logs/ticker.log").contains("tick 5")
    });
    c.signal(nix::sys::signal::Signal::SIGINT);
    assert!(c.wait(Duration::from_secs(30)).success());
    assert!(p.read(".corral/logs/flood.log").lines().count() > 1000);
    assert_no_leftovers(c.pid);
}

#[test]
fn log_files_rotate_by_size_and_keep_every_line() {
    let p = Project::new(
        r#"
log = { max_file_size = "64KiB", keep_files = 10 }

[tasks.chatty]
command = ["python3", "-c", "for i in range(5000): print(f'{i:05} ' + 'z' * 50)"]
"#,
    );
    let (status, out, _) = p.run(&["run", "-q"]);
    assert!(status.success(), "{out}");
    // Oldest file has the highest number; read them back in order.
    let mut files: Vec<(u32, String)> = std::fs::read_dir(p.path().join(".corral/logs"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = match name.strip_prefix("chatty.log") {
                Some("") => 0,
                Some(rest) => rest.trim_start_matches('.').parse().ok()?,
                None => return None,
            };
            Some((n, std::fs::read_to_string(e.path()).unwrap()))
        })
        .collect();
    files.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    assert!(
        files.len() >= 4,
        "rotated into several files: {}",
        files.len()
    );
    let all: Vec<String> = files
        .iter()
        .flat_map(|(_, t)| {
            t.lines()
                .map(|l| l.splitn(3, ' ').nth(2).unwrap().to_string())
        })
        .collect();
    assert_eq!(all.len(), 5000);
    for (i, text) in all.iter().enumerate() {
        assert!(text.starts_with(&format!("{i:05} ")), "line {i}: {text}");
    }
    for (_, t) in &files {
        assert!(
            t.len() <= 64 * 1024 + 200,
            "a file outgrew the limit: {}",
            t.len()
        );
    }
}

/// `logs` with no corral running reads the log files itself (a `log_file` too), by time, with
/// `--grep` and `-n`.
#[test]
fn logs_without_a_running_corral_read_the_files() {
    let p = Project::new(
        r#"
[tasks.one]
command = "echo alpha; echo beta"

[tasks.two]
command = "sleep 0.1; echo gamma"
log_file = "two.log"
"#,
    );
    let (status, out, err) = p.run(&["run", "-q"]);
    assert!(status.success(), "{out}{err}");
    let (status, out, err) = p.run(&["logs"]);
    assert!(status.success(), "{err}");
    let texts: Vec<&str> = out
        .lines()
        .map(|l| l.rsplit_once(" | ").unwrap().1)
        .collect();
    assert_eq!(texts, ["alpha", "beta", "gamma"], "{out}");
    let (_, out, _) = p.run(&["logs", "two"]);
    assert!(
        out.contains("two | gamma") && !out.contains("alpha"),
        "{out}"
    );
    let (_, out, _) = p.run(&["logs", "--grep", "^b", "-n", "5"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let (_, out, _) = p.run(&["logs", "-n", "1", "--json"]);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["text"], "gamma");
    let (status, _, err) = p.run(&["logs", "nope"]);
    assert!(!status.success() && err.contains("`nope`"), "{err}");
}

/// `logs --stderr`/`--stdout`, `--until` and `--raw`, through the running corral and from the
/// files alike.
#[test]
fn logs_filter_by_stream_and_time_and_print_raw() {
    let p = Project::new(
        "[tasks.say]\ncommand = \"echo to-out; echo to-err >&2; sleep 0.2; echo later\"\n\n[services.idle]\ncommand = \"exec sleep 30\"\n",
    );
    let (status, out, err) = p.run(&["run", "-q", "say"]);
    assert!(status.success(), "{out}{err}");
    // The time `later` was written: `--until` it leaves it out and keeps what came before.
    let log = p.read(".corral/logs/say.log");
    let later_at = log
        .lines()
        .find(|l| l.ends_with(" later"))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    let check = |p: &Project| {
        let (_, out, _) = p.run_client(&["logs", "say", "--stderr", "--raw"]);
        assert_eq!(out, "to-err\n");
        let (_, out, _) = p.run_client(&["logs", "say", "--stdout", "--raw"]);
        assert_eq!(out, "to-out\nlater\n");
        let (_, out, _) = p.run_client(&["logs", "say", "--until", &later_at, "--raw"]);
        assert!(out.contains("to-out") && !out.contains("later"), "{out}");
    };
    // From the files (no corral runs) …
    check(&p);
    // … and through a running one.
    let (status, out, err) = p.run_client(&["up", "-d", "idle"]);
    assert!(status.success(), "{out}{err}");
    check(&p);
    let (status, _, _) = p.run_client(&["down"]);
    assert!(status.success());
    p.assert_nothing_left();
}

/// A tail over several units reads their logs newest first and leaves out a log last written
/// before the oldest line it keeps (none of its lines can be newer than its last write). Shown
/// with a file whose lines claim to be newer than its last write: left out while its write
/// time is old, read once that is when its lines say.
#[test]
fn a_tail_over_many_units_leaves_out_logs_last_written_before_its_oldest_line() {
    let p = Project::new(
        r#"
[services.a]
command = ["sleep", "30"]
disabled = true

[services.b]
command = ["sleep", "30"]
disabled = true

[services.c]
command = ["sleep", "30"]
disabled = true
"#,
    );
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    let now = std::time::SystemTime::now();
    let logs = p.path().join(".corral/logs");
    std::fs::create_dir_all(&logs).unwrap();
    // Ten lines a unit, stamped from `at` on, the file last written at `written`.
    let write = |unit: &str, at: std::time::SystemTime, written: std::time::SystemTime| {
        let text: String = (0..10)
            .map(|i| {
                let t = at + Duration::from_millis(i);
                format!("{} out {unit}{i}\n", humantime::format_rfc3339_millis(t))
            })
            .collect();
        let path = logs.join(format!("{unit}.log"));
        std::fs::write(&path, text).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(written).unwrap();
    };
    let ago = |s: u64| now - Duration::from_secs(s);
    write("a", ago(200), ago(200));
    write("c", now, now + Duration::from_millis(10));
    write("b", now + Duration::from_secs(5), ago(100));
    let tail = |p: &Project| {
        let (code, body) = p.http("GET", "/v1/logs?tail=3");
        assert_eq!(code, 200, "{body}");
        let lines: serde_json::Value = serde_json::from_str(&body).unwrap();
        lines
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["text"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(tail(&p), ["c7", "c8", "c9"]);
    write(
        "b",
        now + Duration::from_secs(5),
        now + Duration::from_secs(6),
    );
    assert_eq!(tail(&p), ["b7", "b8", "b9"]);
    // One unit: its file is read whatever its time.
    let (_, body) = p.http("GET", "/v1/services/a/logs?tail=2");
    assert!(body.contains("a8") && body.contains("a9"), "{body}");
    let (status, _, _) = p.run_client(&["down"]);
    assert!(status.success());
    p.assert_nothing_left();
}

/// A log file removed to clear it (or moved away, as logrotate does) is followed by a new one
/// within a second or so; before, the keeper wrote on into the removed file, where nobody could
/// read it, and `corral logs` showed nothing more until the service restarted.
#[test]
fn a_removed_log_file_is_started_anew() {
    let p = Project::new(COUNTER);
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    eventually(Duration::from_secs(10), "lines in the log", || {
        numbers(&p).len() > 100
    });
    std::fs::remove_file(p.path().join(".corral/logs/counter.log")).unwrap();
    eventually(Duration::from_secs(10), "a new log file", || {
        numbers(&p).len() > 100
    });
    let (status, out, err) = p.run_client(&["logs", "-n", "1", "counter"]);
    assert!(status.success() && out.contains("counter | "), "{out}{err}");
    // The whole log directory, for the process running and for the one a restart starts.
    let logs = p.path().join(".corral/logs");
    std::fs::remove_dir_all(&logs).unwrap();
    eventually(Duration::from_secs(10), "a new log directory", || {
        numbers(&p).len() > 100
    });
    std::fs::remove_dir_all(&logs).unwrap();
    let (status, out, err) = p.run_client(&["restart", "counter", "--wait"]);
    assert!(status.success(), "{out}{err}");
    eventually(Duration::from_secs(10), "the new process's log", || {
        numbers(&p).len() > 100
    });
    let (status, out, err) = p.run_client(&["down"]);
    assert!(status.success(), "{out}{err}");
    p.assert_nothing_left();
}
