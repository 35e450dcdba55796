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
