//! Defects found when corral was attacked, each with the test that failed before its fix.

use std::time::Duration;

use crate::harness::*;

fn ok(p: &Project, args: &[&str]) -> String {
    let (status, out, err) = p.run_client(args);
    assert!(status.success(), "corral {args:?}: {out}{err}");
    out
}

fn json(p: &Project, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = p.http_body(method, path, body);
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

fn up_and_wait(p: &Project, name: &str) {
    ok(p, &["up", "-d"]);
    eventually(Duration::from_secs(15), &format!("{name} up"), || {
        is_up(&json(p, "GET", &format!("/v1/services/{name}"), "").1)
    });
}

/// 10: the signal in a JSON body is read, and what is not understood is refused — never
/// taken as SIGTERM.
#[test]
fn a_signal_body_is_read_and_bad_input_refused() {
    let p = Project::new(
        r#"
[services.trap]
command = "trap 'echo got-usr1' USR1; echo ready; while true; do sleep 0.05; done"
"#,
    );
    up_and_wait(&p, "trap");
    for (body, code) in [
        (r#"{"signal": "NOPE"}"#, 400),
        (r#"{"sig": "USR1"}"#, 400),
        ("not json", 400),
        (r#"{"signal": true}"#, 400),
    ] {
        let (status, v) = json(&p, "POST", "/v1/services/trap/signal", body);
        assert_eq!(status, code, "{body}: {v}");
        assert_eq!(v["code"], "bad_request", "{body}: {v}");
    }
    let (status, v) = json(
        &p,
        "POST",
        "/v1/services/trap/signal?signal=HUP",
        r#"{"signal": "USR1"}"#,
    );
    assert_eq!(status, 400, "two different signals: {v}");
    // Still running: nothing above sent it a signal.
    assert!(is_up(&json(&p, "GET", "/v1/services/trap", "").1));
    let (status, v) = json(
        &p,
        "POST",
        "/v1/services/trap/signal",
        r#"{"signal": "USR1"}"#,
    );
    assert_eq!(status, 200, "{v}");
    eventually(Duration::from_secs(10), "USR1 to arrive", || {
        ok(&p, &["logs", "trap"]).contains("got-usr1")
    });
    assert!(is_up(&json(&p, "GET", "/v1/services/trap", "").1));
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// 9: input for a process that never reads waits in the daemon up to a bound, then is refused
/// — the daemon does not grow with it.
#[test]
fn pending_stdin_is_bounded() {
    let p = Project::new("[services.idle]\ncommand = [\"sleep\", \"1000\"]\n");
    up_and_wait(&p, "idle");
    let (status, proc_) = json(&p, "POST", "/v1/procs", r#"{"command": ["sleep", "1000"]}"#);
    assert_eq!(status, 201, "{proc_}");
    let id = proc_["id"].as_str().unwrap();
    let daemon = p.daemon_pid();
    let before = rss_kib(daemon);
    let chunk = format!(r#"{{"data": "{}"}}"#, "x".repeat(100_000));
    let mut refused = 0;
    for _ in 0..100 {
        let (status, v) = json(&p, "POST", &format!("/v1/procs/{id}/input"), &chunk);
        match status {
            200 => {}
            409 => {
                assert_eq!(v["code"], "stdin_full", "{v}");
                refused += 1;
            }
            other => panic!("{other}: {v}"),
        }
    }
    // The pipe holds 64 KiB, the daemon at most 1 MiB more: the rest is refused.
    assert!(refused >= 80, "only {refused} of 100 refused");
    let grown = rss_kib(daemon).saturating_sub(before);
    assert!(grown < 20 * 1024, "the daemon grew by {grown} KiB");
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

fn find_file(dir: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name() == name
                || (e.file_type().is_ok_and(|t| t.is_dir()) && find_file(&e.path(), name))
        })
    })
}

/// 6: a template parameter is one word in a shell string, whatever it holds.
#[test]
fn template_params_cannot_inject_shell() {
    let p = Project::new(
        r#"
[templates.greeter]
command = "echo {greeting}; exec sleep 1000"
setup = ["echo {greeting} > said.txt"]
params = { greeting = "hello" }
"#,
    );
    up_and_wait_daemon(&p);
    let (status, inst) = json(
        &p,
        "POST",
        "/v1/instances",
        r#"{"template": "greeter", "params": {"greeting": "x; touch PWNED #"}}"#,
    );
    assert_eq!(status, 201, "{inst}");
    let name = inst["name"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(15), "the instance to be ready", || {
        json(&p, "GET", &format!("/v1/instances/{name}"), "").1["state"] == "ready"
    });
    let ws = std::path::PathBuf::from(inst["workspace"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(ws.join("said.txt")).unwrap(),
        "x; touch PWNED #\n"
    );
    eventually(Duration::from_secs(10), "the service's line", || {
        ok(&p, &["logs", &name]).contains("x; touch PWNED #")
    });
    assert!(
        !find_file(p.path(), "PWNED"),
        "the parameter ran as a command"
    );
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

fn up_and_wait_daemon(p: &Project) {
    ok(p, &["up", "-d"]);
    eventually(Duration::from_secs(15), "the API", || {
        json(p, "GET", "/ready", "").0 == 200
    });
}

/// 2: an adopted service keeps its port: its probe (`http = "/health"`, the unit's own port)
/// still reaches it, so it is ready again after the daemon's `kill -9` — fixed and auto ports.
#[test]
fn adoption_restores_ports() {
    let port = free_range();
    let p = Project::new(&format!(
        r#"
[services.fixed]
command = ["python3", "tcp_server.py"]
ports = [{port}]
readiness = {{ http = "/health", interval = "100ms" }}

[services.auto]
command = ["python3", "tcp_server.py"]
ports = ["auto"]
readiness = {{ http = "/health", interval = "100ms" }}
"#
    ));
    up_and_wait(&p, "fixed");
    eventually(Duration::from_secs(15), "auto up", || {
        is_up(&json(&p, "GET", "/v1/services/auto", "").1)
    });
    let before = json(&p, "GET", "/v1/services", "").1;
    p.kill_daemon();
    ok(&p, &["up", "-d"]);
    eventually(Duration::from_secs(15), "both adopted and ready", || {
        let list = json(&p, "GET", "/v1/services", "").1;
        list.as_array()
            .is_some_and(|l| l.iter().all(|s| is_up(s) && s["adopted"] == true))
    });
    let after = json(&p, "GET", "/v1/services", "").1;
    for i in 0..2 {
        assert_eq!(after[i]["pid"], before[i]["pid"], "the same process");
        assert_eq!(after[i]["ports"], before[i]["ports"], "the same port");
    }
    assert_eq!(after[0]["ports"][0], port);
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// A GET over TCP with a bearer token: the status.
fn tcp_get(port: u16, path: &str, token: &str) -> u16 {
    tcp_get_from([127, 0, 0, 1], port, path, token)
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `from`.
fn connect_from(from: [u8; 4], port: u16) -> std::net::TcpStream {
    // std cannot bind a client socket; tokio's `TcpSocket` can.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// [`tcp_get`] from the loopback address `from`.
fn tcp_get_from(from: [u8; 4], port: u16, path: &str, token: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = connect_from(from, port);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    parse_http(&resp).0
}

fn listening_port(p: &Project) -> u16 {
    let mut port = 0u16;
    eventually(Duration::from_secs(5), "listening", || {
        port = p
            .read(".corral/daemon.log")
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(' ').next()?.parse().ok())
            .unwrap_or(0);
        port != 0
    });
    port
}

/// 7: what is already in `.corral/` is not trusted: loose or planted secrets are replaced,
/// links are not followed, the directory and every file corral makes are private.
#[test]
fn the_state_dir_trusts_nothing_it_finds() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new("[services.web]\ncommand = \"echo web-line; exec sleep 1000\"\n");
    let state = p.path().join(".corral");
    std::fs::create_dir_all(state.join("logs")).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let planted = "a".repeat(64);
    for (name, m) in [("token", 0o644), ("token.read", 0o666)] {
        std::fs::write(state.join(name), &planted).unwrap();
        std::fs::set_permissions(state.join(name), std::fs::Permissions::from_mode(m)).unwrap();
    }
    let outside = p.path().join("outside.txt");
    std::fs::write(&outside, "untouched\n").unwrap();
    std::os::unix::fs::symlink(&outside, state.join("logs/web.log")).unwrap();

    ok(&p, &["up", "-d", "--listen", "127.0.0.1:0"]);
    let port = listening_port(&p);
    assert_eq!(mode(&state), 0o700);
    for name in [
        "token",
        "token.read",
        "state.db",
        "daemon.pid",
        "daemon.log",
        "corral.lock",
    ] {
        assert_eq!(mode(&state.join(name)), 0o600, "{name}");
    }
    for name in ["token", "token.read"] {
        assert_ne!(
            p.read(&format!(".corral/{name}")),
            planted,
            "{name} was trusted"
        );
    }
    // The planted tokens open nothing; the new one does.
    assert_eq!(tcp_get(port, "/v1/services", &planted), 401);
    assert_eq!(
        tcp_get(port, "/v1/services", p.read(".corral/token").trim()),
        200
    );
    eventually(Duration::from_secs(10), "web running", || {
        is_up(&json(&p, "GET", "/v1/services/web", "").1)
    });
    // The log link was refused (the keeper tells the daemon, which says so in its log), not
    // written through.
    eventually(
        Duration::from_secs(10),
        "the keeper to refuse the link",
        || {
            let log = p.read(".corral/daemon.log");
            log.contains("web: cannot write its log file") && log.contains("symbolic link")
        },
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched\n");
    ok(&p, &["down"]);
    p.assert_nothing_left();

    // A state dir others may write is refused outright, with what to do.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (status, _, err) = p.run_client(&["up", "-d"]);
    assert!(!status.success());
    assert!(
        err.contains("may be written by other users") && err.contains("help:"),
        "{err}"
    );
    p.assert_nothing_left();
}

/// 8: silent TCP connections cannot use up the daemon's descriptors: past a cap they are
/// answered 503 and closed, the silent ones are dropped after the header timeout, and the owner's
/// `ps` and `restart` keep working throughout — here with only 200 descriptors for the daemon.
#[test]
fn idle_tcp_connections_cannot_starve_the_daemon() {
    let p = Project::new("[services.web]\ncommand = [\"sleep\", \"1000\"]\n");
    let started = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 200 && exec '{}' up -d --listen 127.0.0.1:0",
            env!("CARGO_BIN_EXE_corral")
        ))
        .current_dir(p.path())
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    let port = listening_port(&p);
    eventually(Duration::from_secs(10), "web up", || {
        is_up(&json(&p, "GET", "/v1/services/web", "").1)
    });
    let token = p.read(".corral/token");
    let silent: Vec<std::net::TcpStream> = (0..190)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(silent.len() >= 150, "only {} connected", silent.len());
    // The owner is not locked out.
    let ps = ok(&p, &["ps"]);
    assert!(ps.contains("web"), "{ps}");
    ok(&p, &["restart", "web", "--wait"]);
    // Over the cap, TCP clients get a clear answer rather than a hang.
    assert_eq!(tcp_get(port, "/v1/services", token.trim()), 503);
    // One address holds at most half the slots: another is still served.
    assert_eq!(
        tcp_get_from([127, 0, 0, 2], port, "/v1/services", token.trim()),
        200
    );
    // The silent ones are dropped after the header timeout; then TCP serves again.
    eventually(
        Duration::from_secs(30),
        "silent connections dropped",
        || tcp_get(port, "/v1/services", token.trim()) == 200,
    );
    drop(silent);
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// 4: `down` finishes the job when the daemon dies while stopping the stack, and a second
/// `down` (no daemon) ends what is left too; `down` returns only once the daemon process has
/// exited.
#[test]
fn down_finishes_what_a_dying_daemon_left() {
    let p = Project::new(
        r#"
[services.stubborn]
command = "trap '' TERM; echo up; while true; do sleep 0.05; done"
stop = { timeout = "30s" }

[services.quick]
command = ["sleep", "1000"]
"#,
    );
    up_and_wait(&p, "stubborn");
    let daemon = p.daemon_pid();
    let mut down = p.start(&["down"]);
    // The daemon is now waiting out stubborn's 30 s grace: kill it.
    eventually(Duration::from_secs(10), "quick to be stopped", || {
        !p.processes()
            .iter()
            .any(|(_, c)| c.starts_with("sleep 1000"))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = down.wait(Duration::from_secs(30));
    let out = down.stdout();
    assert!(status.success(), "{out}{}", down.stderr());
    assert!(out.contains("ended here: stubborn"), "{out}");
    p.assert_nothing_left();

    // No daemon at all, something left behind: a second `down` ends it.
    up_and_wait(&p, "stubborn");
    p.kill_daemon();
    let out = ok(&p, &["down"]);
    assert!(
        out.contains("no daemon was running; ended what one left"),
        "{out}"
    );
    p.assert_nothing_left();
}

/// `down` with no daemon, after a stack of many services: the message names a few and counts
/// the rest (it was one line of every unit's name and PID: 2,000 of them at scale).
#[test]
fn down_after_a_lost_daemon_names_a_few_and_counts_the_rest() {
    let p = Project::new(&sleep_services(12));
    ok(&p, &["up", "-d"]);
    eventually(Duration::from_secs(15), "all twelve up", || {
        (0..12).all(|i| is_up(&json(&p, "GET", &format!("/v1/services/s{i}"), "").1))
    });
    p.kill_daemon();
    let out = ok(&p, &["down"]);
    assert!(out.contains("ended what one left: "), "{out}");
    // Twelve services (and the keeper, if it had not ended by itself): ten named.
    assert_eq!(out.matches("(pid ").count(), 10, "{out}");
    assert!(
        out.trim_end().ends_with(" and 2 more") || out.trim_end().ends_with(" and 3 more"),
        "{out}"
    );
    p.assert_nothing_left();
}

/// 18: in the foreground, SIGUSR1/SIGUSR2 do not end corral (they used to, leaving the stack),
/// and SIGQUIT kills the stack at once.
#[test]
fn foreground_up_ignores_usr_signals_and_quits_on_quit() {
    use nix::sys::signal::Signal;
    let p = Project::new(
        r#"
[services.stubborn]
command = "trap '' TERM; echo up; while true; do sleep 0.05; done"
stop = { timeout = "60s" }
"#,
    );
    let mut up = p.start(&["up"]);
    up.wait_for("stubborn | up", Duration::from_secs(15));
    for sig in [Signal::SIGUSR1, Signal::SIGUSR2] {
        up.signal(sig);
    }
    // Still serving: a client gets its answer.
    let ps = ok(&p, &["ps"]);
    assert!(ps.contains("stubborn"), "{ps}");
    up.signal(Signal::SIGQUIT);
    // Killed, not stopped gracefully: far sooner than the 60 s grace.
    up.wait(Duration::from_secs(15));
    assert!(
        up.stdout().contains("quit: killing everything now"),
        "{}",
        up.stdout()
    );
    p.assert_nothing_left();
}

/// A request over TCP to `addr` with these headers: (status, body).
fn tcp_raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    parse_http(&String::from_utf8_lossy(&resp))
}

/// 18: the small ones of the API — a lowercase `bearer` is valid HTTP; a listener on
/// 127.0.0.2 answers requests for 127.0.0.2; an oversized body gets the JSON error shape;
/// names that begin with `-` or look like corral's files are refused.
#[test]
fn small_api_defects() {
    let p = Project::new("[services.web]\ncommand = [\"sleep\", \"1000\"]\n");
    ok(&p, &["up", "-d", "--listen", "127.0.0.2:0"]);
    let mut port = 0u16;
    eventually(Duration::from_secs(5), "listening", || {
        port = p
            .read(".corral/daemon.log")
            .split("http://127.0.0.2:")
            .nth(1)
            .and_then(|r| r.split(' ').next()?.parse().ok())
            .unwrap_or(0);
        port != 0
    });
    let addr: std::net::SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let token = p.read(".corral/token");
    let get = |auth: &str| {
        tcp_raw(
            addr,
            &format!(
                "GET /v1/services HTTP/1.1\r\nHost: 127.0.0.2:{port}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
            ),
            b"",
        )
        .0
    };
    assert_eq!(
        get(&format!("Bearer {}", token.trim())),
        200,
        "the address listened on"
    );
    assert_eq!(
        get(&format!("bearer {}", token.trim())),
        200,
        "a lowercase scheme"
    );
    assert_eq!(
        get(&format!("Basic {}", token.trim())),
        401,
        "another scheme"
    );
    // Over the body limit: JSON like every other error.
    let big = vec![b'x'; 3 << 20];
    let (status, body) = tcp_raw(
        addr,
        &format!(
            "POST /v1/procs HTTP/1.1\r\nHost: 127.0.0.2:{port}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            token.trim(),
            big.len()
        ),
        &big,
    );
    assert_eq!(status, 413, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["code"], "too_large", "{v}");
    // A body sent to a route that takes none is read before the answer: closing a socket
    // with unread bytes resets it, and the client lost the answer now and then. So the daemon
    // does not answer while the body is still on its way, and answers once it came.
    {
        use std::io::{Read, Write};
        let body = r#"{"unused": true}"#;
        let mut s =
            std::os::unix::net::UnixStream::connect(p.path().join(".corral/api.sock")).unwrap();
        write!(
            s,
            "GET /v1/project HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut early = [0u8; 64];
        match s.read(&mut early) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("answered before the body was read: {other:?}"),
        }
        s.write_all(body.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    for name in ["-rf", "api.sock", "x.log"] {
        let (status, v) = json(
            &p,
            "POST",
            "/v1/services",
            &format!(r#"{{"name": "{name}", "command": "true"}}"#),
        );
        assert_eq!(status, 400, "{name}: {v}");
    }
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// 18: `corral logs` on a terminal shows a service's escape sequences instead of running them.
#[test]
fn logs_on_a_terminal_escape_control_characters() {
    let p = Project::new(
        "[services.loud]\ncommand = \"printf 'plain\\\\n\\\\033[2J\\\\033]0;pwned\\\\007title\\\\n'; exec sleep 1000\"\n",
    );
    up_and_wait(&p, "loud");
    eventually(Duration::from_secs(10), "the output", || {
        ok(&p, &["logs", "loud"]).contains("title")
    });
    // Through a pipe: as written (a script reading it gets the bytes).
    assert!(ok(&p, &["logs", "loud"]).contains("\u{1b}[2J"));
    // On a terminal (script(1) gives it one): escaped.
    let out = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!("'{}' logs loud", env!("CARGO_BIN_EXE_corral")))
        .arg("/dev/null")
        .current_dir(p.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\\x1b[2J") && text.contains("\\x07title"),
        "{text:?}"
    );
    assert!(!text.contains("\u{1b}]0;pwned"), "{text:?}");
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// 18: one rule for an ad-hoc process's `cwd`: where it really is must be inside the project
/// (`/`, `../..` and a link that leads out alike), unless corral was started to allow it.
#[test]
fn ad_hoc_cwd_stays_inside_the_project_unless_allowed() {
    let p = Project::new("[services.web]\ncommand = [\"sleep\", \"1000\"]\n");
    std::fs::create_dir_all(p.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("/tmp", p.path().join("out")).unwrap();
    up_and_wait(&p, "web");
    for cwd in ["/", "../..", "out"] {
        let (status, v) = json(
            &p,
            "POST",
            "/v1/procs",
            &format!(r#"{{"command": "true", "cwd": "{cwd}"}}"#),
        );
        assert_eq!(status, 400, "{cwd}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("--procs-anywhere"),
            "{v}"
        );
    }
    let (status, v) = json(
        &p,
        "POST",
        "/v1/procs",
        r#"{"command": "pwd", "cwd": "sub"}"#,
    );
    assert_eq!(status, 201, "{v}");
    ok(&p, &["down"]);
    ok(&p, &["up", "-d", "--procs-anywhere"]);
    let (status, v) = json(
        &p,
        "POST",
        "/v1/procs",
        r#"{"command": "true", "cwd": "/"}"#,
    );
    assert_eq!(status, 201, "allowed: {v}");
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(Duration::from_secs(5), "it to die", || is_dead(pid));
}

/// The numbers in the log: how many are missing from 0..=max, and whether any repeats.
fn gaps(numbers: &[u64]) -> (usize, bool) {
    let max = numbers.iter().copied().max().unwrap_or(0);
    let mut seen = std::collections::HashSet::new();
    let repeated = numbers.iter().any(|n| !seen.insert(*n));
    ((max + 1) as usize - seen.len(), repeated)
}

/// 1: no single corral process may take a service down. `kill -9` of the keeper: the service
/// keeps running (no EPIPE: the daemon holds its pipes too) and its log goes on; then `kill -9`
/// of the daemon: `up -d` adopts the same process, the log still goes on — and, holding the
/// keeper's copies now, the new daemon survives another keeper death the same way.
#[test]
fn neither_the_keeper_nor_the_daemon_can_take_a_service_down() {
    let p = Project::new(COUNTER);
    ok(&p, &["up", "-d"]);
    eventually(Duration::from_secs(10), "counter up", || {
        is_up(&json(&p, "GET", "/v1/services/counter", "").1)
    });
    let pid = json(&p, "GET", "/v1/services/counter", "").1["pid"]
        .as_u64()
        .unwrap() as i32;
    let grows = |what: &str| {
        let before = numbers(&p).len();
        eventually(Duration::from_secs(10), what, || {
            numbers(&p).len() > before + 300
        });
    };
    grows("output");

    kill9(p.keeper_pid());
    grows("output after the keeper's death");
    assert!(!is_dead(pid), "the service died with the keeper");

    p.kill_daemon();
    grows("output after the daemon's death");
    ok(&p, &["up", "-d"]);
    eventually(Duration::from_secs(10), "adopted", || {
        let c = json(&p, "GET", "/v1/services/counter", "").1;
        c["adopted"] == true && c["pid"].as_u64() == Some(pid as u64)
    });
    // The new daemon got the keeper's copies: a second keeper death is survived too.
    grows("output with the new daemon");
    kill9(p.keeper_pid());
    grows("output after the second keeper's death");
    assert!(
        !is_dead(pid),
        "the service died with the second keeper: {}",
        p.read(".corral/daemon.log")
    );
    ok(&p, &["down"]);
    p.assert_nothing_left();

    let numbers = numbers(&p);
    let (missing, repeated) = gaps(&numbers);
    assert!(!repeated, "a line was written twice");
    // Only what a dead keeper had read and not yet written may be lost: one chunk at most per
    // death (measured: usually none).
    eprintln!("lines lost across two keeper deaths and a daemon death: {missing}");
    assert!(missing <= 2 * 64, "{missing} lines lost");
}

/// 16: several `up -d` at once: exactly one says it started the daemon (with the PID that
/// answers), the others say who holds the project — never a PID that already exited.
#[test]
fn concurrent_up_d_has_one_winner() {
    let p = Project::new("[services.web]\ncommand = [\"sleep\", \"1000\"]\n");
    let mut runs: Vec<_> = (0..6).map(|_| p.start(&["up", "-d"])).collect();
    let mut started = Vec::new();
    for r in &mut runs {
        let status = r.wait(Duration::from_secs(30));
        let (out, err) = (r.stdout(), r.stderr());
        if status.success() {
            started.push(out.clone());
        } else {
            assert!(err.contains("already runs this project"), "{err}");
            assert!(!err.contains("pid )"), "{err}");
        }
    }
    assert_eq!(started.len(), 1, "{started:?}");
    let daemon = p.daemon_pid();
    assert!(
        started[0].contains(&format!("(pid {daemon})")),
        "{}",
        started[0]
    );
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// A follower of every unit gets the lines of each that writes, once each and in order: it
/// looks at the units that have news (and at all of them on a tick while lines come), not at
/// every one at each line.
#[test]
fn a_follower_of_every_unit_gets_each_writers_lines_once() {
    let writer = |name: &str| {
        format!(
            "[services.{name}]\ncommand = \"echo waiting; while [ ! -e go ]; do sleep 0.01; done; \
             i=0; while [ $i -lt 200 ]; do echo {name}$i; i=$((i+1)); done; exec sleep 30\"\n"
        )
    };
    let idle: String = (0..30)
        .map(|i| format!("[services.idle{i}]\ncommand = [\"sleep\", \"30\"]\n"))
        .collect();
    let p = Project::new(&format!("{}{}{idle}", writer("a"), writer("b")));
    up_and_wait(&p, "b");
    eventually(Duration::from_secs(15), "a up", || {
        is_up(&json(&p, "GET", "/v1/services/a", "").1)
    });
    let mut follower = p.start(&["logs", "-f"]);
    // Both `waiting` lines are in its backlog: it follows from there, without a gap.
    eventually(Duration::from_secs(30), "both in the backlog", || {
        follower.stdout().matches("| waiting").count() == 2
    });
    std::fs::write(p.path().join("go"), "").unwrap();
    follower.wait_for("a199", Duration::from_secs(30));
    follower.wait_for("b199", Duration::from_secs(30));
    follower.signal(nix::sys::signal::Signal::SIGTERM);
    follower.wait(Duration::from_secs(10));
    let out = follower.stdout();
    for name in ["a", "b"] {
        let seen: Vec<u32> = out
            .lines()
            .filter_map(|l| l.rsplit(' ').next()?.strip_prefix(name)?.parse().ok())
            .collect();
        assert_eq!(seen, (0..200).collect::<Vec<u32>>(), "{name}: {out}");
    }
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// 17: a follower gets every line of a 200,000-line burst, in order, once — it reads the files
/// when it falls behind the live tap, never skipping.
#[test]
fn logs_follow_never_skips_a_line() {
    let p = Project::new(
        r#"
[services.burst]
command = ["python3", "-c", "import os, sys, time\nprint('waiting', flush=True)\nwhile not os.path.exists('go'): time.sleep(0.01)\nsys.stdout.write(''.join(f'n{i}\\n' for i in range(200000)))\nsys.stdout.flush()\ntime.sleep(1000)"]
"#,
    );
    up_and_wait(&p, "burst");
    let mut follower = p.start(&["logs", "-f", "burst"]);
    // The burst comes once the follower is following (it was 0.3 s after the start, which a
    // loaded machine missed: the follower then read it all as its backlog of 100).
    follower.wait_for("waiting", Duration::from_secs(30));
    std::fs::write(p.path().join("go"), "").unwrap();
    follower.wait_for("n199999", Duration::from_secs(60));
    follower.signal(nix::sys::signal::Signal::SIGTERM);
    follower.wait(Duration::from_secs(10));
    let out = follower.stdout();
    let numbers: Vec<u64> = out
        .lines()
        .filter_map(|l| l.rsplit(' ').next()?.strip_prefix('n')?.parse().ok())
        .collect();
    assert!(
        !out.contains("skipped") && !out.contains("lagged"),
        "a marker of lost lines"
    );
    assert_eq!(numbers.len(), 200_000, "every line once");
    assert!(
        numbers.iter().enumerate().all(|(i, n)| *n == i as u64),
        "in order"
    );
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// 3: a task adopted after the daemon's `kill -9` reports its real exit code when it ends, so
/// what waits for it to complete successfully starts (it was "exit status unknown", and the
/// dependent was skipped).
#[test]
fn an_adopted_task_reports_its_exit_code() {
    let p = Project::new(
        r#"
[tasks.migrate]
command = "echo migrating; sleep 1; echo migrated"

[services.api]
command = ["sleep", "1000"]
depends_on = { migrate = "completed_successfully" }
"#,
    );
    ok(&p, &["up", "-d"]);
    eventually(Duration::from_secs(10), "migrate running", || {
        ok(&p, &["logs", "migrate"]).contains("migrating")
    });
    p.kill_daemon();
    ok(&p, &["up", "-d"]);
    eventually(
        Duration::from_secs(15),
        "api up after the adopted migrate",
        || is_up(&json(&p, "GET", "/v1/services/api", "").1),
    );
    let migrate = json(&p, "GET", "/v1/services/migrate", "").1;
    assert_eq!(migrate["state"], "exited", "{migrate}");
    assert_eq!(
        migrate["last_exit"],
        serde_json::json!({"code": 0}),
        "{migrate}"
    );
    // Adopted, not run again.
    let log = ok(&p, &["logs", "migrate"]);
    assert_eq!(log.matches("migrating").count(), 1, "{log}");
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

fn owner_uid(pid: i32) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}")).unwrap().uid()
}

/// 11: services and tasks run as the `user` (and `group`, `umask`) they name — corral drops
/// privileges in the child — and corral still stops, adopts and measures them. (Needs root,
/// which these machines give; elsewhere a unit naming another user is a config error.)
#[test]
fn units_run_as_their_user() {
    if !nix::unistd::Uid::effective().is_root() {
        // The config error for non-root is checked by the config crate's tests.
        return;
    }
    let p = Project::new(
        r#"
[services.app]
command = "echo \"as $(id -un):$(id -gn) home=$HOME umask=$(umask)\"; exec sleep 1000"
user = "nobody"
umask = "027"
readiness = { exec = "test \"$(id -un)\" = nobody" }

[tasks.setup]
command = "echo \"task as $(id -un)\""
user = "nobody"

[services.notifier]
command = "systemd-notify --ready; exec sleep 1000"
user = "nobody"
readiness = { notify = true }

[services.after]
command = ["sleep", "1000"]
depends_on = { setup = "completed_successfully", app = "healthy", notifier = "healthy" }
"#,
    );
    // `notifier` (another user, who cannot enter the state dir) reaches its NOTIFY_SOCKET.
    up_and_wait(&p, "after");
    let app = json(&p, "GET", "/v1/services/app?metrics=true", "").1;
    let pid = app["pid"].as_u64().unwrap() as i32;
    assert_eq!(owner_uid(pid), 65534, "{app}");
    eventually(Duration::from_secs(10), "its line", || {
        ok(&p, &["logs", "app"]).contains("as nobody:nogroup home=")
    });
    let log = ok(&p, &["logs", "app"]);
    assert!(log.contains("umask=0027"), "{log}");
    assert!(ok(&p, &["logs", "setup"]).contains("task as nobody"));
    // Stopped, measured and adopted across users.
    p.kill_daemon();
    ok(&p, &["up", "-d"]);
    eventually(Duration::from_secs(10), "adopted", || {
        let a = json(&p, "GET", "/v1/services/app", "").1;
        a["adopted"] == true && a["pid"].as_u64() == Some(pid as u64) && is_up(&a)
    });
    ok(&p, &["stop", "app", "--wait"]);
    assert!(is_dead(pid));
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// 5, the fallback (no cgroups): a process that escapes its service — a new session, every
/// descriptor closed, an empty environment (no marker), its parent gone — is still ended: its
/// PID and start time were recorded while it ran, and the daemon that comes after a `kill -9`
/// ends it with the stack.
#[test]
fn escapees_are_found_after_the_daemon_dies() {
    let p = Project::new(
        r#"
[services.escaper]
command = ["python3", "-c", "import os, sys, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.closerange(0, 1024)\n        os.execve('/bin/sleep', ['sleep', '4242'], {})\n    os._exit(0)\nprint('forked', flush=True)\nwhile True: time.sleep(1)"]
"#,
    )
    .with_env("CORRAL_CGROUP", "off");
    up_and_wait(&p, "escaper");
    // Ours: it kept the service's working directory.
    let root = std::fs::canonicalize(p.path()).unwrap();
    let escapee = || running_in(&root, b"sleep\x004242\x00");
    // It runs, outside the group, without a marker.
    eventually(Duration::from_secs(10), "the escapee to run", || {
        escapee().is_some()
    });
    let pid = escapee().unwrap();
    // Seen while the daemon lived (the census after a start).
    eventually(
        Duration::from_secs(10),
        "the escapee to be recorded",
        || {
            let db = p.path().join(".corral/state.db");
            std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import sqlite3; print(sqlite3.connect('{}').execute('select count(*) from trees where pid = {pid}').fetchone()[0])",
                db.display()
            ))
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "1")
        },
    );
    p.kill_daemon();
    ok(&p, &["up", "-d"]);
    eventually(Duration::from_secs(10), "adopted", || {
        json(&p, "GET", "/v1/services/escaper", "").1["adopted"] == true
    });
    ok(&p, &["down"]);
    eventually(Duration::from_secs(5), "the escapee to be ended", || {
        is_dead(pid)
    });
    p.assert_nothing_left();
}

/// A live process started in `dir` whose command line is exactly `cmdline` (an escapee has
/// neither a marker nor a parent of ours; its working directory tells it is the project's).
fn running_in(dir: &std::path::Path, cmdline: &[u8]) -> Option<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !is_dead(*pid))
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == cmdline)
                && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(dir))
        })
}

/// 5, exactly: where cgroups can be made, a service's process is in a cgroup of its own, and
/// what escapes it while no daemon runs — so no census ever saw it: a new session, every fd
/// closed, no marker, re-parented to init — is still ended by the next daemon's `down`.
#[test]
fn escapes_while_no_daemon_runs_are_ended_by_the_cgroup() {
    if writable_cgroup2().is_none() {
        eprintln!("skipped: no writable cgroup v2 hierarchy here (the fallback test covers it)");
        return;
    }
    let p = Project::new(
        r#"
[services.late]
command = ["python3", "-c", "import os, time\nwhile not os.path.exists('go'): time.sleep(0.02)\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.closerange(0, 1024)\n        os.execve('/bin/sleep', ['sleep', '4243'], {})\n    os._exit(0)\nwhile True: time.sleep(1)"]
"#,
    );
    up_and_wait(&p, "late");
    let service = json(&p, "GET", "/v1/services/late", "").1["pid"]
        .as_i64()
        .unwrap() as i32;
    let cgroup = std::fs::read_to_string(format!("/proc/{service}/cgroup")).unwrap();
    assert!(
        cgroup.contains("/corral-") && cgroup.contains("@late@"),
        "the service is not in a cgroup of its own: {cgroup}"
    );
    p.kill_daemon();
    std::fs::write(p.path().join("go"), "").unwrap();
    let root = std::fs::canonicalize(p.path()).unwrap();
    let escapee = || running_in(&root, b"sleep\x004243\x00");
    eventually(Duration::from_secs(10), "the escapee to run", || {
        escapee().is_some()
    });
    let pid = escapee().unwrap();
    // Nothing of corral saw it: no daemon ran; its parent is init now.
    ok(&p, &["up", "-d"]);
    eventually(Duration::from_secs(10), "adopted", || {
        json(&p, "GET", "/v1/services/late", "").1["adopted"] == true
    });
    ok(&p, &["down"]);
    eventually(Duration::from_secs(5), "the escapee to be ended", || {
        is_dead(pid)
    });
    p.assert_nothing_left();
}

/// 5, setup steps: an instance's setup step that is running when the daemon dies — and what it
/// started, escaped (new session, no marker, no parent) — is ended by the next daemon; it does
/// not go on writing into the failed instance's workspace.
#[test]
fn setup_steps_do_not_outlive_their_daemon() {
    if writable_cgroup2().is_none() {
        eprintln!("skipped: no writable cgroup v2 hierarchy here");
        return;
    }
    let p = Project::new(
        r#"
[templates.slow]
command = "exec sleep 1000"
setup = ["python3 -c \"import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.closerange(0, 1024)\n        os.execve('/bin/sleep', ['sleep', '4244'], {})\n    os._exit(0)\nopen('stepping', 'w').close()\ntime.sleep(1000)\""]
"#,
    );
    up_and_wait_daemon(&p);
    let (status, inst) = json(&p, "POST", "/v1/instances", r#"{"template": "slow"}"#);
    assert_eq!(status, 201, "{inst}");
    let ws = std::path::PathBuf::from(inst["workspace"].as_str().unwrap());
    eventually(Duration::from_secs(15), "the setup step to run", || {
        ws.join("stepping").exists()
    });
    let root = std::fs::canonicalize(p.path()).unwrap();
    let escapee = || running_in(&root, b"sleep\x004244\x00");
    eventually(Duration::from_secs(10), "the escapee to run", || {
        escapee().is_some()
    });
    let pid = escapee().unwrap();
    p.kill_daemon();
    ok(&p, &["up", "-d"]);
    eventually(Duration::from_secs(10), "the escapee to be ended", || {
        is_dead(pid)
    });
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// 11, instances: a template with `user` runs its setup steps as that user too, in a workspace
/// that is theirs (files written and archives unpacked by corral are handed over first), so its
/// service can change what setup made.
#[test]
fn an_instance_with_a_user_is_theirs_from_setup_on() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let p = Project::new(
        r#"
[templates.box]
command = "echo changed >> made-by-setup.txt; exec sleep 1000"
workdir = "{workspace}"
user = "nobody"
files = { "given.txt" = "from corral" }
setup = ["id -un > made-by-setup.txt", "echo more >> given.txt"]
"#,
    );
    up_and_wait_daemon(&p);
    let (status, inst) = json(&p, "POST", "/v1/instances", r#"{"template": "box"}"#);
    assert_eq!(status, 201, "{inst}");
    let name = inst["name"].as_str().unwrap().to_string();
    let state = |p: &Project| json(p, "GET", &format!("/v1/instances/{name}"), "").1;
    eventually(Duration::from_secs(15), "the instance to be ready", || {
        state(&p)["state"] == "ready"
    });
    let ws = std::path::PathBuf::from(inst["workspace"].as_str().unwrap());
    use std::os::unix::fs::MetadataExt;
    for f in ["", "given.txt", "made-by-setup.txt"] {
        let uid = std::fs::metadata(ws.join(f)).unwrap().uid();
        assert_eq!(uid, 65534, "`{f}` in the workspace is not nobody's");
    }
    assert_eq!(
        std::fs::read_to_string(ws.join("given.txt")).unwrap(),
        "from corralmore\n"
    );
    let wrote = || {
        std::fs::read_to_string(ws.join("made-by-setup.txt")).unwrap_or_default()
            == "nobody\nchanged\n"
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !wrote() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        wrote(),
        "the service did not write: {}",
        ok(&p, &["logs", &name])
    );
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// A small filesystem mounted over a directory for one test (tmpfs, `size` bytes), unmounted
/// (lazily: processes of a failed test may still hold files on it) when dropped. None where
/// this user may not mount (not root, no CAP_SYS_ADMIN): the caller skips.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).ok()?;
        let options = format!("size={size},mode=0700");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| SmallDisk(dir.to_path_buf()))
    }

    /// Write zeros to a file on it until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// 21: a full disk (`.corral/` on a filesystem with no room left) took the stack down. The
/// keeper's report of the log write that failed was an `eprintln!` to its own stderr — a file
/// on the same disk — which panicked: the task reading that service's pipes died, and the
/// service blocked on its next write, for good (also once there was room again). The daemon's
/// report of a state database write that failed panicked the same way at the next state change,
/// and the stack went with it. Now: the service is never blocked, the daemon goes on, the lines
/// that could not be written are counted and the file says so once it can be written again.
#[test]
fn a_full_disk_blocks_no_service_and_takes_nothing_down() {
    // Its progress goes to a file outside the full disk: the log cannot show it meanwhile.
    const TALKER: &str = r#"
[services.talker]
command = ["python3", "-u", "-c", "import itertools, time\nfor i in itertools.count():\n    print(f'line {i}', flush=True)\n    if i % 50 == 0:\n        open('progress.tmp', 'w').write(str(i))\n        __import__('os').replace('progress.tmp', 'progress')\n    time.sleep(0.001)"]
"#;
    let p = Project::new(TALKER);
    let Some(disk) = SmallDisk::mount(&p.path().join(".corral"), 1 << 20) else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    };
    ok(&p, &["up", "-d"]);
    eventually(Duration::from_secs(10), "talker up", || {
        is_up(&json(&p, "GET", "/v1/services/talker", "").1)
    });
    let progress = || p.read("progress").trim().parse::<u64>().unwrap_or(0);
    let goes_on = |what: &str| {
        let before = progress();
        eventually(Duration::from_secs(10), what, || progress() > before + 300);
    };
    goes_on("output");

    let filler = disk.fill();
    goes_on("output with the disk full");
    // Said where a `-d` user looks (its log is on the same full disk): `ps`, the API.
    let trouble = || {
        json(&p, "GET", "/v1/services/talker", "").1["log_trouble"]
            .as_str()
            .map(str::to_string)
    };
    eventually(Duration::from_secs(10), "the trouble in the API", || {
        trouble().is_some_and(|t| t.contains("No space left"))
    });
    let out = ok(&p, &["ps"]);
    assert!(out.contains("log not written: No space left"), "{out}");
    let out = ok(&p, &["why", "talker"]);
    assert!(out.contains("its log file cannot be written"), "{out}");
    // A state change writes to the state database, and reports that it cannot.
    ok(&p, &["restart", "talker", "--wait", "--timeout", "20s"]);
    goes_on("output of the new process with the disk full");
    let daemon = p.daemon_pid();
    assert!(!is_dead(daemon), "the daemon died");
    ok(&p, &["ps"]);

    std::fs::remove_file(filler).unwrap();
    // Written again within a second or so, after a line saying what is missing.
    eventually(Duration::from_secs(10), "the log written again", || {
        let log = p.read(".corral/logs/talker.log");
        log.lines()
            .skip_while(|l| !l.contains(" err corral: ") || !l.contains("are missing here"))
            .filter(|l| l.contains(" out line "))
            .count()
            > 100
    });
    let log = p.read(".corral/logs/talker.log");
    assert!(
        log.lines()
            .all(|l| l.is_empty() || l.contains(" out line ") || l.contains(" err corral: ")),
        "a line cut in half, or one not the service's:\n{}",
        log.lines()
            .filter(|l| !l.contains(" out line "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eventually(Duration::from_secs(5), "the trouble over", || {
        trouble().is_none()
    });
    // The daemon said so where it could: the failure went unsaid (its own log is on the full
    // disk), the recovery not.
    eventually(Duration::from_secs(5), "said in the daemon's log", || {
        p.read(".corral/daemon.log")
            .contains("talker: its log file is written again")
    });
    ok(&p, &["down"]);
    p.assert_nothing_left();
    drop(disk);
}

/// 22: `.corral/` removed while a stack ran (`git clean -fdx`, `rm -rf .corral`) took the lock
/// file with it: a second `corral up` started every service again beside the first daemon's,
/// which nothing could reach any more. Now the second is refused, naming the first, and
/// `corral down` stops the first and its services.
#[test]
fn a_removed_state_dir_starts_no_second_stack() {
    let p = Project::new("[services.web]\ncommand = [\"sleep\", \"1000\"]\n");
    up_and_wait(&p, "web");
    let daemon = p.daemon_pid();
    let sleeps = || {
        p.processes()
            .into_iter()
            .filter(|(_, cmd)| cmd.starts_with("sleep"))
            .count()
    };
    assert_eq!(sleeps(), 1);
    std::fs::remove_dir_all(p.path().join(".corral")).unwrap();

    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(!status.success(), "{out}{err}");
    assert!(
        err.contains(&format!("another corral (pid {daemon})")) && err.contains("`corral down`"),
        "{err}"
    );
    assert_eq!(sleeps(), 1, "a second web was started");
    assert!(!is_dead(daemon));
    // A client says what is wrong, not that nothing runs.
    let (status, _, err) = p.run_client(&["ps"]);
    assert_eq!(status.code(), Some(3));
    assert!(
        err.contains(&format!("a corral (pid {daemon}) runs this project")),
        "{err}"
    );

    let out = ok(&p, &["down"]);
    assert!(out.contains(&format!("stopped (pid {daemon}")), "{out}");
    assert!(is_dead(daemon));
    p.assert_nothing_left();
}

/// 23: the corral binary removed while its daemon ran (`cargo clean`, an uninstall; or
/// replaced, by an upgrade): every task failed ("command `…/corral` not found", its `__wrap`
/// is corral itself) and a keeper that died could not be started again. Now both run through
/// `/proc/self/exe`: the daemon's own binary, whatever became of its file.
#[test]
fn a_removed_corral_binary_still_runs_tasks_and_keepers() {
    let p = Project::new(
        "[services.web]\ncommand = \"echo web-line; exec sleep 1000\"\n\n[tasks.hello]\ncommand = \"echo hello-from-task\"\n",
    );
    let copy = p.path().join("corral-copy");
    std::fs::copy(BIN, &copy).unwrap();
    let started = std::process::Command::new(&copy)
        .args(["up", "-d", "web"])
        .current_dir(p.path())
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    eventually(Duration::from_secs(10), "web up", || {
        is_up(&json(&p, "GET", "/v1/services/web", "").1)
    });
    std::fs::remove_file(&copy).unwrap();

    let (status, out, err) = p.run_client(&["run", "hello"]);
    assert!(status.success(), "{out}{err}");
    let out = ok(&p, &["logs", "hello"]);
    assert!(out.contains("hello-from-task"), "{out}");

    let keeper = p.keeper_pid();
    kill9(keeper);
    eventually(Duration::from_secs(10), "a new keeper", || {
        std::fs::read_to_string(p.path().join(".corral/keeper.lock"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .is_some_and(|pid| pid != keeper && !is_dead(pid))
    });
    ok(&p, &["down"]);
    p.assert_nothing_left();
}
