//! `corral up`: dependency order, health gating, restarts, log_ready, failures that stay local.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn dependency_order_is_gated_by_tcp_and_http_health() {
    let p = Project::new(
        r#"
[services.db]
command = ["python3", "tcp_server.py", "0.6"]
ports = ["auto"]
readiness = { tcp = "127.0.0.1:{port}", interval = "100ms" }

[services.api]
command = ["python3", "tcp_server.py", "0.3"]
ports = ["auto"]
depends_on = { db = "healthy" }
readiness = { http = "/health", status = 200, body = "ok", interval = "100ms" }

[services.web]
command = ["sleep", "30"]
depends_on = { api = "healthy" }
"#,
    );
    let mut c = p.start(&["up"]);
    c.wait_for("web: started", T);
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    let lines = corral_lines(&c.stdout());
    assert!(position(&lines, "api: waiting for `db` (healthy)") < position(&lines, "db: ready"));
    assert!(position(&lines, "db: ready") < position(&lines, "api: started"));
    assert!(position(&lines, "api: ready") < position(&lines, "web: started"));
    // Stop runs in reverse: web, then api, then db.
    assert!(position(&lines, "web: stopped") < position(&lines, "api: stopping"));
    assert!(position(&lines, "api: stopped") < position(&lines, "db: stopping"));
    assert_no_leftovers(c.pid);
}

#[test]
fn a_crash_loop_backs_off_then_fails_and_leaves_no_zombies() {
    let p = Project::new(
        r#"
[services.flaky]
command = "echo run; exit 3"
restart = { max_restarts = 3, startup_max_restarts = 10, backoff_initial = "100ms", jitter = 0.0 }

[services.steady]
command = ["sleep", "30"]
"#,
    );
    let mut c = p.start(&["up"]);
    let out = c.wait_for("flaky: failed", T);
    assert!(
        out.contains("flaky: failed: restarted 3 times, giving up (last: exit code 3)"),
        "{out}"
    );
    assert!(out.contains("exit code 3; restart 1/3 in 100ms"), "{out}");
    assert!(out.contains("exit code 3; restart 3/3 in 400ms"), "{out}");
    // corral reaped every run: no zombie children while it keeps `steady` running.
    eventually(Duration::from_secs(5), "no zombie children", || {
        zombie_children(c.pid).is_empty()
    });
    // The log file has the four runs, with growing gaps between them (100, 200, 400 ms).
    let log = p.read(".corral/logs/flaky.log");
    let times: Vec<f64> = log
        .lines()
        .map(|l| timestamp_secs(l.split(' ').next().unwrap()))
        .collect();
    assert_eq!(times.len(), 4, "{log}");
    for (i, want) in [0.1, 0.2, 0.4].iter().enumerate() {
        let gap = times[i + 1] - times[i];
        assert!(gap >= want * 0.95, "gap {i} was {gap}s, want ≥ {want}s");
    }
    assert!(c.stdout().contains("steady: started"));
    c.signal(Signal::SIGTERM);
    assert!(c.wait(T).success(), "stopped by the user: exit 0");
    assert_no_leftovers(c.pid);
}

/// Seconds within the minute from an RFC 3339 timestamp like `2026-11-22T21:42:41.123Z`
/// (enough for gaps shorter than a minute that do not cross the hour).
fn timestamp_secs(ts: &str) -> f64 {
    let time = ts.split('T').nth(1).unwrap().trim_end_matches('Z');
    let parts: Vec<f64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

#[test]
fn liveness_failure_restarts_the_service() {
    let p = Project::new(
        r#"
[services.app]
command = "touch alive; echo started; exec sleep 30"
liveness = { exec = ["test", "-f", "alive"], interval = "100ms", failure_threshold = 2 }
restart = { backoff_initial = "50ms" }
"#,
    );
    let mut c = p.start(&["up"]);
    c.wait_for("app: started", T);
    // "started" is said at spawn; the file comes a moment later, from the process itself.
    eventually(T, "the file", || p.path().join("alive").exists());
    std::fs::remove_file(p.path().join("alive")).unwrap();
    let out = c.wait_for("liveness probe failed 2 times", T);
    assert!(
        out.contains("`test -f alive` ended with exit code 1"),
        "{out}"
    );
    // Restarted: the new run recreates the file and keeps passing.
    eventually(T, "second start", || {
        c.stdout().matches("app: started").count() == 2
    });
    eventually(T, "file recreated", || p.path().join("alive").exists());
    // The file comes before the line (`touch; echo`): a stop in between would end the run
    // before it says so.
    eventually(T, "the second run's line", || {
        std::fs::read_to_string(p.path().join(".corral/logs/app.log"))
            .is_ok_and(|l| l.matches("started").count() == 2)
    });
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    let log = p.read(".corral/logs/app.log");
    assert_eq!(log.matches("started").count(), 2, "{log}");
    assert_no_leftovers(c.pid);
}

/// A consumer that waits for its queue's line.
const QUEUE_AND_CONSUMER: &str = r#"
[services.queue]
command = "echo warming; sleep 0.4; echo queue is READY; exec sleep 30"
log_ready = "is READY"

[services.consumer]
command = "echo consuming; exec sleep 30"
depends_on = { queue = "log_ready" }
"#;

#[test]
fn log_ready_gates_a_dependent() {
    let p = Project::new(QUEUE_AND_CONSUMER);
    let mut c = p.start(&["up"]);
    c.wait_for("consumer: started", T);
    c.signal(Signal::SIGINT);
    c.wait(T);
    let out = c.stdout();
    let ready = out.find("queue is READY").unwrap();
    let started = out.find("consumer: started").unwrap();
    assert!(ready < started, "{out}");
    assert!(out.contains("consumer: waiting for `queue` (log_ready)"));
    assert_no_leftovers(c.pid);
}

/// A detached daemon shows no lines: the keeper sends it only news of a unit's output (its
/// followers read the log) — but the lines themselves of a unit whose output is watched.
#[test]
fn log_ready_gates_a_dependent_of_a_detached_daemon() {
    let p = Project::new(QUEUE_AND_CONSUMER);
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    let daemon = p.daemon_pid();
    eventually(T, "the consumer running", || {
        p.run_client(&["ps"])
            .1
            .lines()
            .any(|l| l.starts_with("consumer ") && l.contains(" running "))
    });
    let stamp = |log: &str, text: &str| {
        let log = p.read(&format!(".corral/logs/{log}.log"));
        let line = log.lines().find(|l| l.ends_with(text)).unwrap().to_string();
        line.split(' ').next().unwrap().to_string()
    };
    // RFC 3339 stamps in UTC compare as text.
    assert!(stamp("queue", "queue is READY") <= stamp("consumer", "consuming"));
    let (status, out, err) = p.run_client(&["down"]);
    assert!(status.success(), "{out}{err}");
    assert_no_leftovers(daemon);
}

#[test]
fn a_missing_command_fails_only_its_service_and_dependents() {
    let p = Project::new(
        r#"
[services.ghost]
command = ["no-such-program-corral-test"]

[services.needs-ghost]
command = ["sleep", "30"]
depends_on = ["ghost"]

[services.fine]
command = ["sleep", "30"]
"#,
    );
    let mut c = p.start(&["up"]);
    let out = c.wait_for("needs-ghost: skipped", T);
    assert!(
        out.contains("ghost: failed: command `no-such-program-corral-test` not found (is it installed and on PATH?)"),
        "{out}"
    );
    assert!(
        out.contains("needs-ghost: skipped: needs `ghost` started, but `ghost` failed"),
        "{out}"
    );
    c.wait_for("fine: started", T);
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);
}

/// A string command that is only words runs with no shell in between: the unit's PID is the
/// program's. One with shell syntax still runs under `sh -c`; a script without a `#!` line,
/// named as a plain string, is still run by the shell (as a service and as a task); a program
/// that is not there fails to start, saying so, as it does in an argv.
#[test]
fn plain_string_commands_run_without_a_shell() {
    let p = Project::new(
        r#"
[services.plain]
command = "sleep 30"

[services.shelled]
command = "sleep 30; true"

[services.script]
command = "./no-shebang.sh"

[services.ghost]
command = "no-such-program-corral-test --flag"

[tasks.script-task]
command = "./no-shebang.sh task"
"#,
    );
    let script = p.path().join("no-shebang.sh");
    std::fs::write(
        &script,
        "echo \"ran as ${1:-service}\"\n[ -n \"$1\" ] || exec sleep 30\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut c = p.start(&["up"]);
    let out = c.wait_for("script-task: exited (exit code 0)", T);
    let out = [out, c.wait_for("shelled: started", T)].concat();
    let out = [out, c.wait_for("plain: started", T)].concat();
    let comm_of = |name: &str| {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("{name}: started (pid ")))
            .unwrap_or_else(|| panic!("{name} started: {out}"));
        let pid: String = line
            .split("(pid ")
            .nth(1)
            .unwrap()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default()
    };
    assert_eq!(comm_of("plain").trim(), "sleep");
    assert_eq!(comm_of("shelled").trim(), "sh");
    assert!(
        out.contains("ghost: failed: command `no-such-program-corral-test` not found"),
        "{out}"
    );
    eventually(T, "the script's line in its log", || {
        p.read(".corral/logs/script.log").contains("ran as service")
    });
    assert!(
        p.read(".corral/logs/script-task.log")
            .contains("ran as task")
    );
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);
}

#[test]
fn up_with_names_starts_only_those_and_their_dependencies() {
    let p = Project::new(
        r#"
[services.a]
command = ["sleep", "30"]
[services.b]
command = ["sleep", "30"]
depends_on = ["a"]
[services.c]
command = ["sleep", "30"]
"#,
    );
    let mut c = p.start(&["up", "b"]);
    c.wait_for("b: started", T);
    c.signal(Signal::SIGINT);
    c.wait(T);
    let out = c.stdout();
    assert!(out.contains("a: started"));
    assert!(!out.contains("c: started"), "{out}");
    assert_no_leftovers(c.pid);

    let (status, _, err) = p.run(&["up", "bb"]);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("unknown unit `bb` (did you mean `b`?)"),
        "{err}"
    );
}

#[test]
fn a_service_that_exits_cleanly_ends_up_once_everything_is_done() {
    let p = Project::new("[services.once]\ncommand = \"echo hello\"\n");
    let (status, out, _) = p.run(&["up"]);
    assert!(status.success());
    assert!(out.contains("once   | hello"), "{out}");
    assert!(out.contains("once: exited (exit code 0)"), "{out}");
}

#[test]
fn environment_comes_from_dotenv_env_files_and_tables() {
    let p = Project::new(
        r#"
env = { STAGE = "dev", COST = "$$5" }

[tasks.show]
command = "echo stage=$STAGE db=$DB_URL cost=$COST user=$APP_USER port=$PORT"
env_file = "app.env"
env = { DB_URL = "postgres://${APP_USER}@localhost/${STAGE}" }
"#,
    );
    std::fs::write(p.path().join(".env"), "APP_USER=ann\n").unwrap();
    std::fs::write(
        p.path().join("app.env"),
        "# app settings\nAPP_USER=bob\nSTAGE=override-me\n",
    )
    .unwrap();
    let (status, out, _) = p.run(&["run", "-q"]);
    assert!(status.success(), "{out}");
    let log = p.read(".corral/logs/show.log");
    // Later sources win: .env < env_file < the unit's env; the top-level env comes before both.
    assert!(
        log.contains(
            "stage=override-me db=postgres://bob@localhost/override-me cost=$5 user=bob port="
        ),
        "{log}"
    );
}

#[test]
fn an_http_probe_that_never_passes_restarts_after_the_start_timeout() {
    let p = Project::new(
        r#"
[services.api]
command = ["python3", "tcp_server.py"]
ports = ["auto"]
readiness = { http = "/", body = "never-there", interval = "100ms", timeout = "100ms", failure_threshold = 2 }
start_timeout = "100ms"
restart = { backoff_initial = "50ms", max_restarts = 1 }
"#,
    );
    let mut c = p.start(&["up"]);
    // 2 × (100 + 100) ms: the start timeout stretched to fit the probe, then a restart.
    c.wait_for("api: not ready after 400ms", T);
    c.wait_for("restart 1/1", T);
    let out = c.wait_for("api: failed: restarted 1 time, giving up", T);
    assert!(!out.contains("api: ready"), "{out}");
    c.signal(Signal::SIGINT);
    c.wait(T);
    assert_no_leftovers(c.pid);
}

#[test]
fn a_second_corral_for_the_same_project_is_refused() {
    let p = Project::new("[services.s]\ncommand = [\"sleep\", \"30\"]\n");
    let mut first = p.start(&["up"]);
    first.wait_for("s: started", T);
    let (status, _, err) = p.run(&["up"]);
    assert_eq!(status.code(), Some(1));
    let want = format!(
        "another corral (pid {}) is already running this project",
        first.pid
    );
    assert!(err.contains(&want), "{err}");
    first.signal(Signal::SIGINT);
    assert!(first.wait(T).success());
    assert_no_leftovers(first.pid);
}

/// A self-signed certificate and key for `127.0.0.1`, made with the `openssl` CLI.
fn self_signed(p: &Project) {
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .current_dir(p.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(status.success());
}

#[test]
fn https_probes_gate_dependents_and_check_certificates_unless_insecure() {
    let p = Project::new(
        r#"
[services.tls]
command = "exec openssl s_server -quiet -www -accept 127.0.0.1:$PORT -cert cert.pem -key key.pem"
ports = ["auto"]
readiness = { http = "https://127.0.0.1:{port}/", insecure = true, body = "s_server", interval = "100ms" }

[services.strict]
command = "exec openssl s_server -quiet -www -accept 127.0.0.1:$PORT -cert cert.pem -key key.pem"
ports = ["auto"]
readiness = { http = "https://127.0.0.1:{port}/", interval = "100ms", timeout = "1s" }

[services.web]
command = ["sleep", "30"]
depends_on = { tls = "healthy" }
"#,
    );
    self_signed(&p);
    let mut c = p.start(&["up"]);
    c.wait_for("web: started", T);
    let lines = corral_lines(&c.stdout());
    assert!(position(&lines, "tls: ready") < position(&lines, "web: started"));
    // A self-signed certificate is not trusted when `insecure` is not set, and `why` says so.
    eventually(T, "strict's probe names the certificate", || {
        let (_, out, _) = p.run(&["why", "strict"]);
        out.contains("invalid peer certificate: UnknownIssuer") && out.contains("insecure = true")
    });
    assert!(!c.stdout().contains("strict: ready"), "{}", c.stdout());
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);
}

/// `watch`: a saved file restarts the service once; a storm of saves within the debounce is one
/// restart; `watch_ignore` and `target/` are not watched; a watched task runs again.
#[test]
fn a_watched_change_restarts_once_per_quiet_moment() {
    let p = Project::new(
        r#"
[services.app]
command = "echo app up; exec sleep 30"
watch = ["src/**/*.txt", "config.toml"]
watch_ignore = ["src/skip/**"]
watch_debounce = "200ms"

[tasks.build]
command = "echo built"
watch = ["src/**/*.txt"]
watch_debounce = "200ms"
"#,
    );
    for d in ["src/skip", "src/deep/er", "target"] {
        std::fs::create_dir_all(p.path().join(d)).unwrap();
    }
    let mut c = p.start(&["up"]);
    c.wait_for("app: started", T);
    c.wait_for("build: exited (exit code 0)", T);
    let starts = |c: &Corral| c.stdout().matches("app: started").count();
    let builds = |c: &Corral| c.stdout().matches("built").count();

    std::fs::write(p.path().join("src/deep/er/a.txt"), "1").unwrap();
    eventually(T, "app restarted", || starts(&c) == 2);
    assert!(
        c.stdout()
            .contains("`src/deep/er/a.txt` changed: restarting"),
        "{}",
        c.stdout()
    );
    eventually(T, "build ran again", || builds(&c) == 2);

    // 300 files written at once: one restart.
    for i in 0..300 {
        std::fs::write(p.path().join(format!("src/f{i}.txt")), "x").unwrap();
    }
    eventually(T, "app restarted once more", || starts(&c) == 3);
    // Ignored and never-watched places, and a file matching no pattern.
    std::fs::write(p.path().join("src/skip/b.txt"), "1").unwrap();
    std::fs::write(p.path().join("target/c.txt"), "1").unwrap();
    std::fs::write(p.path().join("src/d.rs"), "1").unwrap();
    // A directory made after the start is watched too.
    std::fs::create_dir_all(p.path().join("src/new")).unwrap();
    std::fs::write(p.path().join("src/new/e.txt"), "1").unwrap();
    eventually(T, "the new directory's file restarts app", || {
        starts(&c) == 4
    });
    assert!(
        c.stdout().contains("`src/new/e.txt` changed"),
        "{}",
        c.stdout()
    );
    assert!(!c.stdout().contains("skip/b.txt") && !c.stdout().contains("target/c.txt"));
    assert!(!c.stdout().contains("src/d.rs"));
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);
}

/// sd_notify: Debian's `systemd-notify --ready` gates a dependent (and returns at once: its
/// BARRIER is answered), `STATUS=` shows in `why`, and missed `WATCHDOG=1` heartbeats restart
/// the service.
#[test]
fn notify_readiness_status_and_watchdog() {
    let p = Project::new(
        r#"
[services.db]
command = "sleep 0.3; systemd-notify --ready --status='accepting connections'; echo notified; exec sleep 30"
readiness = { notify = true }

[services.api]
command = "exec sleep 30"
depends_on = { db = "healthy" }

[services.beat]
command = ["python3", "beat.py"]
watchdog = "400ms"
"#,
    );
    std::fs::write(
        p.path().join("beat.py"),
        r#"import os, socket, time
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
assert os.environ["WATCHDOG_USEC"] == "400000"
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for i in range(8):
    s.sendto(b"WATCHDOG=1\nSTATUS=beat %d" % i, addr)
    time.sleep(0.1)
time.sleep(30)
"#,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut c = p.start(&["up"]);
    c.wait_for("api: started", T);
    let lines = corral_lines(&c.stdout());
    assert!(position(&lines, "db: ready") < position(&lines, "api: started"));
    // `systemd-notify` waits for its barrier (5 s when nobody answers): it returned at once.
    eventually(Duration::from_secs(3), "systemd-notify returned", || {
        p.read(".corral/logs/db.log").contains("notified")
    });
    assert!(started.elapsed() < Duration::from_secs(4));
    let (_, why, _) = p.run(&["why", "db"]);
    assert!(why.contains("status: accepting connections"), "{why}");
    c.wait_for("beat: no WATCHDOG=1 within 400ms; restarting", T);
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);
    assert!(
        std::fs::read_dir(p.path().join(".corral/notify"))
            .unwrap()
            .next()
            .is_none(),
        "sockets left"
    );
}

/// `max_memory`: a service whose tree holds 64 MiB against a 32 MiB limit is restarted (its
/// memory sampled once a second, two samples over in a row); one under its limit is left alone.
#[test]
fn a_service_over_max_memory_is_restarted() {
    let p = Project::new(
        r#"
[services.fat]
command = ["python3", "-c", "import time; b = b'x' * (64 << 20); print('allocated', flush=True); time.sleep(30)"]
max_memory = "32MiB"

[services.slim]
command = ["python3", "-c", "import time; b = b'x' * (8 << 20); time.sleep(30)"]
max_memory = "32MiB"
"#,
    );
    let mut c = p.start(&["up"]);
    let out = c.wait_for("over max_memory 32.0 MiB; restarting", T);
    assert!(out.contains("fat: memory "), "{out}");
    eventually(T, "fat started again", || {
        c.stdout().matches("fat: started").count() >= 2
    });
    assert!(!c.stdout().contains("slim: memory"), "{}", c.stdout());
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);
}

/// `schedule` with a seconds field: the task runs on its schedule (not at `up`), twice in a
/// little over two seconds; `up` keeps running for it; `why` names the next run; a bad pattern
/// is refused with its line.
#[test]
fn a_scheduled_task_runs_on_its_schedule() {
    let p = Project::new(
        r#"
[tasks.tick]
command = "echo tick"
schedule = "* * * * * *"

[services.web]
command = "exec sleep 30"
"#,
    );
    let mut c = p.start(&["up"]);
    c.wait_for("web: started", T);
    eventually(T, "two scheduled runs", || {
        c.stdout().matches("| tick\n").count() >= 2
    });
    let (_, why, _) = p.run(&["why", "tick"]);
    assert!(why.contains("next scheduled run in"), "{why}");
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);

    std::fs::write(
        p.path().join("corral.toml"),
        "[tasks.t]\ncommand = \"true\"\nschedule = \"61 * * * *\"\noverlap = \"later\"\n",
    )
    .unwrap();
    let (status, _, err) = p.run(&["validate"]);
    assert!(!status.success());
    assert!(
        err.contains("`61 * * * *` is not a cron schedule") && err.contains("corral.toml:3:12"),
        "{err}"
    );
    assert!(
        err.contains("`overlap` `later` is not one of skip, queue, kill"),
        "{err}"
    );
}

/// Hooks: `on_ready`, `on_failure`, `on_exit` and `on_restart` run with the unit's name, state
/// and exit in their environment, their output in corral's; a stop asked for is not a failure.
#[test]
fn hooks_run_on_ready_failure_exit_and_restart() {
    let p = Project::new(
        r#"
[services.flaky]
command = "echo up; sleep 0.3; exit 3"
restart = { max_restarts = 1, backoff_initial = "100ms", jitter = 0.0 }
on_ready = "echo ready $CORRAL_UNIT $CORRAL_STATE"
on_failure = "echo failed: $CORRAL_EXIT"
on_exit = ["sh", "-c", "echo ended: $CORRAL_EXIT"]
on_restart = "echo again"

[services.calm]
command = "exec sleep 30"
on_failure = "echo calm failed"
on_exit = "echo calm ended: $CORRAL_EXIT"
on_ready = "sleep 20"
hook_timeout = "300ms"
"#,
    );
    let mut c = p.start(&["up"]);
    let out = c.wait_for("flaky: failed", T);
    eventually(T, "the hooks of both runs", || {
        let out = c.stdout();
        out.matches("flaky: on_exit: ended: exit code 3").count() == 2
            && out
                .matches("flaky: on_failure: failed: exit code 3")
                .count()
                == 2
    });
    let out = c.stdout() + &out;
    assert!(
        out.contains("flaky: on_ready: ready flaky running"),
        "{out}"
    );
    assert_eq!(
        c.stdout().matches("flaky: on_restart: again").count(),
        1,
        "{out}"
    );
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    let out = c.stdout();
    assert!(
        out.contains("calm: on_exit: calm ended: signal 15"),
        "{out}"
    );
    assert!(
        !out.contains("calm failed"),
        "a stop is not a failure: {out}"
    );
    assert_no_leftovers(c.pid);
}

/// corral raises its soft limit on open files to the hard one (it holds two pipes per
/// process); what it starts inherits it.
#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    let p =
        Project::new("[tasks.show]\ncommand = \"echo soft=$(ulimit -Sn) hard=$(ulimit -Hn)\"\n");
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("ulimit -Sn 256 && exec '{BIN}' run -q")])
        .current_dir(p.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = p.read(".corral/logs/show.log");
    let hard = log.split("hard=").nth(1).unwrap_or("").trim().to_string();
    assert!(!hard.is_empty(), "{log}");
    assert!(log.contains(&format!("soft={hard} ")), "{log}");
    assert_ne!(hard, "256", "{log}");
}

/// 2,000 services start, are all running, and stop leaving nothing behind; the API answers
/// while they start (not once the whole start is done).
#[test]
fn two_thousand_services_start_and_stop_leaving_nothing() {
    let n = 2000;
    let p = Project::new(&sleep_services(n));
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    let mut counts = Vec::new();
    eventually(Duration::from_secs(120), "2,000 running", || {
        let (_, ps) = p.http("GET", "/v1/services");
        let running = ps.matches("\"state\":\"running\"").count();
        counts.push(ps.matches("\"state\":\"starting\"").count());
        running == n
    });
    // Units are `starting` only inside the step that starts them all: an answer that saw some
    // was given in the middle of it.
    assert!(
        counts.iter().any(|&c| c > 0),
        "no answer came in the middle of the start: {counts:?}"
    );
    // `ps` over all of them: each row with its process's memory (the sample reads thousands of
    // processes, on threads).
    let (status, out, err) = p.run_client(&["ps"]);
    assert!(status.success(), "{err}");
    let measured = out
        .lines()
        .filter(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.get(2) == Some(&"running")
                && cells.get(5).is_some_and(|m| m.ends_with(['K', 'M']))
        })
        .count();
    assert_eq!(measured, n, "{}", &out[..out.len().min(2000)]);
    let (status, out, err) = p.run_client(&["down"]);
    assert!(status.success(), "{out}{err}");
    p.assert_nothing_left();
}

/// At the machine's limits: a corral whose open-file limit is too small for its stack starts
/// what fits, says for the rest what ran out and what to do, keeps answering, and stops leaving
/// nothing.
#[test]
fn out_of_descriptors_is_said_plainly_and_nothing_breaks() {
    let n = 40;
    let p = Project::new(&sleep_services(n));
    let mut c = p.start_limited(&["up"], Some(48));
    let out = c.wait_for("corral has used up its open-file limit (48;", T);
    assert!(
        out.contains("raise `ulimit -n` (the hard limit) for corral"),
        "{out}"
    );
    // And it was said before anything started, with the numbers.
    let err = c.stderr();
    assert!(
        err.contains("40 units need about 184 open files")
            && err.contains("over this user's limit of 48"),
        "{err}"
    );
    // Still answering: some run, the others wait to try again.
    let (status, ps) = p.http("GET", "/v1/services");
    assert_eq!(status, 200, "{ps}");
    assert!(ps.contains("\"state\":\"running\""), "{ps}");
    assert!(ps.contains("\"state\":\"backoff\""), "{ps}");
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success(), "{}", c.stderr());
    assert_no_leftovers(c.pid);
}

/// `up -d`: what the daemon says as it starts (here: more units than open files allow) reaches
/// the person who ran it, not only the daemon's log.
#[test]
fn up_detached_shows_what_the_daemon_said_as_it_started() {
    let p = Project::new(&sleep_services(20));
    let mut c = p.start_limited(&["up", "-d"], Some(100));
    assert!(c.wait(T).success(), "{}", c.stderr());
    let err = c.stderr();
    assert!(
        err.contains("20 units need about 124 open files") && err.contains("limit of 100"),
        "{err}"
    );
    let daemon = p.daemon_pid();
    let (status, out, err) = p.run_client(&["down"]);
    assert!(status.success(), "{out}{err}");
    assert_no_leftovers(daemon);
}

/// `kill_filters`: before the start, a stray matching the filter (a regex over its command
/// line) is killed with its tree, and corral says what it killed.
#[test]
fn kill_filters_end_a_stray_and_its_tree_before_the_start() {
    use std::os::unix::process::CommandExt;
    let tag = format!("corral-stray-{}", std::process::id());
    let here = tempfile::tempdir().unwrap();
    let mut stray = std::process::Command::new("sh")
        .args(["-c", "sleep 60 & echo $! > child.pid; wait", &tag])
        .current_dir(here.path())
        .process_group(0)
        .spawn()
        .unwrap();
    let p = Project::new(&format!(
        "[services.app]\ncommand = \"exec sleep 30\"\nkill_filters = [\"{tag}\"]\n"
    ));
    let child_pid_file = here.path().join("child.pid");
    eventually(T, "the stray's child", || {
        std::fs::read_to_string(&child_pid_file).is_ok_and(|s| !s.trim().is_empty())
    });
    let child: i32 = std::fs::read_to_string(&child_pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut c = p.start(&["up"]);
    let out = c.wait_for("app: started", T);
    assert!(
        out.contains(&format!("app: kill_filters: killed pid {}", stray.id())),
        "{out}"
    );
    // Both gone: the stray (reaped here, its parent) and its child (re-parented, ended).
    let status = stray.wait().unwrap();
    assert!(status.code().is_none(), "killed by a signal: {status}");
    eventually(T, "the stray's child ended", || is_dead(child));
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);
}

/// `limits`: rlimits set in the unit's process (a task's command too, through its wrapper).
#[test]
fn limits_are_set_in_the_units_processes() {
    let p = Project::new(
        r#"
[services.svc]
command = "echo svc nofile=$(ulimit -n) core=$(ulimit -c); exec sleep 30"
limits = { nofile = 256, core = 0 }

[tasks.job]
command = "echo job nofile=$(ulimit -Hn) fsize=$(ulimit -f)"
limits = { nofile = "300", fsize = "unlimited" }
"#,
    );
    let mut c = p.start(&["up"]);
    c.wait_for("job: exited (exit code 0)", T);
    eventually(T, "svc's line", || {
        c.stdout().contains("svc nofile=256 core=0")
    });
    assert!(
        c.stdout().contains("job nofile=300 fsize=unlimited"),
        "{}",
        c.stdout()
    );
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);

    std::fs::write(
        p.path().join("corral.toml"),
        "[services.a]\ncommand = \"x\"\nlimits = { files = 10, nproc = \"many\", cpus = 0, memory = \"1KiB\", cpu = 0.5 }\n",
    )
    .unwrap();
    let (status, _, err) = p.run(&["validate"]);
    assert!(!status.success());
    for want in [
        "`files`",
        "`limits.nproc` `many` is not a number or size",
        "`limits.cpus` must be a number of CPUs from 0.01 to 1024",
        "`limits.memory` must be a size of at least 1MiB",
        "for a share of CPUs write `cpus`",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// Cgroup limits (`limits.memory`, `limits.cpus`) are written into the unit's cgroup where
/// corral's cgroup has the controllers, and `why` says for each limit how it applies — or that
/// it does not, and why (on a machine without delegated controllers, like this project's CI).
#[test]
fn why_says_which_limits_applied() {
    let p = Project::new(
        r#"
[services.capped]
command = ["sleep", "30"]
limits = { memory = "64MiB", cpus = 0.5, nofile = 512 }
max_memory = "48MiB"
"#,
    );
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    eventually(T, "running", || {
        p.http("GET", "/v1/services/capped")
            .1
            .contains("\"state\":\"running\"")
    });
    let (status, out, err) = p.run_client(&["why", "capped", "--json"]);
    assert!(status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let limits: Vec<&str> = v["limits"]
        .as_array()
        .expect("limits")
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(limits.len(), 4, "{limits:?}");
    assert!(limits.contains(&"max_memory 48MiB: restarted when its tree's RSS stays over it"));
    assert!(limits.contains(&"nofile 512: rlimit"));
    // Where the unit's cgroup got the limits, the kernel's files hold them.
    let pid = v["pid"].as_u64().unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let unified = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("");
    for (limit, file, want) in [
        ("memory 64MiB: ", "memory.max", "67108864"),
        ("cpus 0.5: ", "cpu.max", "50000 100000"),
    ] {
        let line = limits.iter().find(|l| l.starts_with(limit)).expect(limit);
        let how = &line[limit.len()..];
        if how.starts_with("cgroup ") {
            let dir = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
                .iter()
                .map(|m| std::path::Path::new(m).join(unified.trim_start_matches('/')))
                .find(|d| d.join(file).exists())
                .expect("the unit's cgroup");
            let got = std::fs::read_to_string(dir.join(file)).unwrap();
            assert_eq!(got.trim(), want, "{line}");
        } else {
            assert!(how.starts_with("not applied ("), "{line}");
        }
    }
    let (status, out, _) = p.run_client(&["why", "capped"]);
    assert!(status.success());
    assert!(out.contains("  limit nofile 512: rlimit"), "{out}");
    let (status, _, _) = p.run_client(&["down"]);
    assert!(status.success());
    p.assert_nothing_left();
}

/// The kernel charges a user's pipes to that user, and past `fs.pipe-user-pages-soft` makes
/// every new pipe of theirs 8 KiB — any program's. A stack of 600 services with the kernel's
/// 64 KiB pipes passes it; corral makes its units' pipes smaller instead, so the user's other
/// programs keep theirs (a flooding unit's pipe still grows). Run as `nobody` when the tests
/// run as root, whose pipes are not charged.
#[test]
fn a_large_stack_leaves_its_users_other_programs_their_pipes() {
    use std::os::unix::fs::PermissionsExt;
    let n = 600;
    let probe = "[services.probe]\ncommand = [\"/usr/bin/python3\", \"-c\", \"import fcntl, time\\nprint('pipes', fcntl.fcntl(1, 1032), fcntl.fcntl(2, 1032), flush=True)\\ntime.sleep(1000)\"]\n";
    let p = Project::new(&format!("{}{probe}", sleep_services(n)));
    // As root: the same as an ordinary user, through a copy of corral anyone may run.
    let root = nix::unistd::geteuid().is_root();
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = bin_dir.path().join("corral");
    std::fs::copy(BIN, &bin).unwrap();
    for (path, mode) in [
        (bin_dir.path(), 0o755),
        (bin.as_path(), 0o755),
        (p.path(), 0o777),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for entry in std::fs::read_dir(p.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let as_user = |program: &std::path::Path, args: &[&str]| {
        let mut c = if root {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(program);
            c
        } else {
            std::process::Command::new(program)
        };
        let out = c.args(args).current_dir(p.path()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = as_user(&bin, &["up", "-d"]);
    assert!(ok, "{out}");
    let mut pipes = String::new();
    eventually(
        Duration::from_secs(60),
        "the probe to say its pipes",
        || {
            pipes = as_user(&bin, &["logs", "-n", "1", "probe"]).1;
            pipes.contains("pipes ")
        },
    );
    // Another program of the same user, while the stack runs.
    let (_, other) = as_user(
        std::path::Path::new("/usr/bin/python3"),
        &[
            "-c",
            "import os, fcntl\nr, w = os.pipe()\nprint(fcntl.fcntl(w, 1032))",
        ],
    );
    let (ok, out) = as_user(&bin, &["down"]);
    assert!(ok, "{out}");
    p.assert_nothing_left();
    assert_eq!(
        other.trim(),
        "65536",
        "another program's pipe; the probe said {pipes}"
    );
    // The kernel's share by default: 16,384 pages, so 601 units get 16 KiB pipes.
    let soft = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft").unwrap();
    if soft.trim() == "16384" {
        assert!(pipes.trim_end().ends_with("pipes 16384 16384"), "{pipes}");
    }
}

/// Units that start together are launched side by side, from more than one thread: each still
/// gets its own output pipes and its own exit status, and a command that is not there fails
/// only its own unit. 40 services that write their name and stay, 20 that exit at once with a
/// code of their own (reaped while others are being started), and 4 missing programs among
/// them, all in one step.
#[test]
fn units_started_together_each_get_their_own_output_exit_and_error() {
    let mut config = String::new();
    for i in 0..64 {
        let command = match i % 16 {
            5 => "[\"no-such-program-corral-test\"]".to_string(),
            1 | 3 | 9 | 11 | 13 => format!("[\"sh\", \"-c\", \"exit {}\"]", 10 + i),
            _ => format!("[\"sh\", \"-c\", \"echo out-u{i}; echo err-u{i} >&2; exec sleep 1000\"]"),
        };
        config.push_str(&format!(
            "[services.u{i}]\ncommand = {command}\nrestart = {{ mode = \"no\" }}\n"
        ));
    }
    let p = Project::new(&config);
    let mut c = p.start(&["up"]);
    let log = |i: usize| {
        std::fs::read_to_string(p.path().join(format!(".corral/logs/u{i}.log"))).unwrap_or_default()
    };
    eventually(T, "every unit to have written, exited or failed", || {
        let out = c.stdout();
        (0..64).all(|i| match i % 16 {
            5 => out.contains(&format!("u{i}: failed")),
            1 | 3 | 9 | 11 | 13 => out.contains(&format!("u{i}: exited")),
            _ => log(i).lines().count() == 2,
        })
    });
    let out = c.stdout();
    for i in 0..64 {
        match i % 16 {
            5 => assert!(
                out.contains(&format!(
                    "u{i}: failed: command `no-such-program-corral-test` not found"
                )),
                "u{i}: {out}"
            ),
            1 | 3 | 9 | 11 | 13 => assert!(
                out.contains(&format!("u{i}: exited (exit code {})", 10 + i)),
                "u{i}: {out}"
            ),
            // Its own lines, from both streams, and nobody else's.
            _ => {
                let log = log(i);
                let mut words: Vec<&str> = log
                    .lines()
                    .filter_map(|l| l.split_whitespace().last())
                    .collect();
                words.sort();
                assert_eq!(
                    words,
                    [format!("err-u{i}"), format!("out-u{i}")],
                    "u{i}: {log}"
                );
            }
        }
    }
    let staying = (0..64)
        .filter(|i| !matches!(i % 16, 1 | 3 | 5 | 9 | 11 | 13))
        .count();
    assert_eq!(
        out.matches(": started (pid ").count(),
        staying + 20,
        "{out}"
    );
    c.signal(Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);
    p.assert_nothing_left();
}
