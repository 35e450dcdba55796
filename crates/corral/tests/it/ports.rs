//! Declared ports: a conflict names its holder; `kill_others` takes the port back.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn a_port_conflict_names_the_holder() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = Project::new(&format!(
        "[services.web]\ncommand = [\"sleep\", \"30\"]\nports = [{port}]\n[services.other]\ncommand = \"echo fine\"\n"
    ));
    let (status, out, _) = p.run(&["up"]);
    assert_eq!(status.code(), Some(1));
    let me = std::process::id();
    let want = format!("web: failed: port {port} is already in use by pid {me} (`");
    assert!(out.contains(&want), "{out}");
    assert!(out.contains("set `kill_others = true`"), "{out}");
    assert!(out.contains("| fine"), "the other service still ran: {out}");
    drop(listener);
}

#[test]
fn kill_others_kills_the_holder_tree_and_starts() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A stale server from "an earlier run", with a child of its own.
    let mut holder = Command::new("python3")
        .args(["-c", &format!(
            "import socket, subprocess, time\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', {port})); s.listen()\nsubprocess.Popen(['sleep', '60'])\nprint('holding', flush=True)\ntime.sleep(60)"
        )])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "holding");
    let p = Project::new(&format!(
        "[services.web]\ncommand = [\"python3\", \"tcp_server.py\"]\nports = [{port}]\nkill_others = true\nreadiness = {{ tcp = \"127.0.0.1:{{port}}\" }}\n"
    ));
    let mut c = p.start(&["up"]);
    let out = c.wait_for("web: ready", T);
    assert!(out.contains(&format!("holding port {port}")), "{out}");
    let status = holder.wait().unwrap();
    assert!(!status.success(), "the holder was killed");
    c.signal(nix::sys::signal::Signal::SIGINT);
    assert!(c.wait(T).success());
    assert_no_leftovers(c.pid);
}

#[test]
fn an_auto_port_is_given_as_port_and_kept_across_restarts() {
    let p = Project::new(
        r#"
[services.s]
command = "echo port=$PORT arg={port}; sleep 0.3; exit 1"
ports = ["auto"]
restart = { max_restarts = 1, backoff_initial = "50ms" }
"#,
    );
    let (status, out, _) = p.run(&["up"]);
    assert_eq!(status.code(), Some(1));
    let ports: Vec<&str> = out.lines().filter(|l| l.contains("port=")).collect();
    assert_eq!(ports.len(), 2, "{out}");
    assert_eq!(ports[0], ports[1], "same port after the restart");
    let line = ports[0].split("| ").nth(1).unwrap();
    let (a, b) = line.split_once(' ').unwrap();
    assert_eq!(a.trim_start_matches("port="), b.trim_start_matches("arg="));
}
