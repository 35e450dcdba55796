//! The daemon, its API and CLI client, persistence, and surviving `kill -9`. Everything here
//! runs the real binary against a real socket.

use std::time::Duration;

use crate::harness::*;

const TWO: &str = r#"
[services.db]
command = "echo db-up; exec sleep 1000"

[services.api]
command = "trap '' USR1; echo api-up; exec sleep 1000"
depends_on = ["db"]
"#;

fn ok(p: &Project, args: &[&str]) -> String {
    let (status, out, err) = p.run_client(args);
    assert!(status.success(), "corral {args:?} failed: {out}\n{err}");
    out
}

fn services(p: &Project) -> serde_json::Value {
    serde_json::from_str(&ok(p, &["ps", "--json"])).unwrap()
}

fn service<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

/// Whether the list has a unit of that name.
fn lists(list: &serde_json::Value, name: &str) -> bool {
    list.as_array().unwrap().iter().any(|s| s["name"] == name)
}

fn wait_state(p: &Project, name: &str, state: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let last = services(p);
        let found = last.as_array().unwrap().iter().find(|s| s["name"] == name);
        if found.is_some_and(|s| in_state(s, state)) {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} not {state} within 15 s: {last:#}\ndaemon log:\n{}",
            p.read(".corral/daemon.log")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn daemon_serves_the_api_and_the_cli_end_to_end() {
    let p = Project::new(TWO);
    let out = ok(&p, &["up", "-d"]);
    assert!(out.contains("daemon started"), "{out}");
    // One daemon per project.
    let (status, _, err) = p.run_client(&["up", "-d"]);
    assert!(!status.success());
    assert!(err.contains("already runs this project"), "{err}");

    let list = wait_state(&p, "api", "running");
    let db_pid = service(&list, "db")["pid"].as_u64().unwrap();
    let ps = ok(&p, &["ps"]);
    assert!(ps.starts_with("NAME"), "{ps}");
    assert!(ps.contains(&db_pid.to_string()), "{ps}");

    eventually(Duration::from_secs(10), "log lines", || {
        ok(&p, &["logs", "db"]).contains("db-up")
    });
    let both = ok(&p, &["logs", "--grep=-up$"]);
    assert!(both.contains("db-up") && both.contains("api-up"), "{both}");
    assert!(!ok(&p, &["logs", "--grep", "^api"]).contains("db-up"));

    // Stop without dependents: api stops and is held; db keeps its PID.
    ok(&p, &["stop", "api"]);
    let list = wait_state(&p, "api", "inactive");
    assert_eq!(service(&list, "api")["held"], true);
    assert_eq!(service(&list, "db")["pid"].as_u64(), Some(db_pid));
    assert!(ok(&p, &["why", "api"]).contains("stopped by the user"));
    ok(&p, &["start", "api"]);
    wait_state(&p, "api", "running");

    // Restart with dependents: both get new processes.
    let api_pid = service(&services(&p), "api")["pid"].as_u64().unwrap();
    ok(&p, &["restart", "db", "--with-dependents"]);
    eventually(Duration::from_secs(15), "new pids", || {
        let l = services(&p);
        let (d, a) = (service(&l, "db"), service(&l, "api"));
        is_up(d)
            && is_up(a)
            && d["pid"].as_u64() != Some(db_pid)
            && a["pid"].as_u64() != Some(api_pid)
    });
    assert!(ok(&p, &["tree"]).contains("api: running\n  db (started): running"));
    // A signal it ignores leaves it be; one that ends it is noticed and the policy restarts it.
    let api_pid = service(&services(&p), "api")["pid"].as_u64().unwrap();
    let (status, body) = p.http("POST", "/v1/services/api/signal?signal=USR1");
    assert_eq!(status, 200, "{body}");
    let killed = ok(&p, &["kill", "-s", "HUP", "api"]);
    assert!(killed.contains("SIGHUP"), "{killed}");
    eventually(
        Duration::from_secs(15),
        "api restarted after SIGHUP",
        || {
            let l = services(&p);
            let a = service(&l, "api");
            is_up(a) && a["pid"].as_u64() != Some(api_pid) && a["restarts"] == 1
        },
    );

    // Bad input: a clear 4xx with a JSON reason, never a hang or a 500.
    for (method, path, status, code) in [
        ("GET", "/v1/services/nope", 404, "unknown_service"),
        ("POST", "/v1/services/nope/start", 404, "unknown_service"),
        ("GET", "/v1/logs?tail=abc", 400, "bad_request"),
        ("GET", "/v1/logs?grep=(", 400, "bad_request"),
        ("GET", "/v1/logs?since=yesterday-ish", 400, "bad_request"),
        ("GET", "/v1/logs?services=nope", 404, "unknown_service"),
        ("GET", "/v1/logs?bogus=1", 400, "bad_request"),
        (
            "POST",
            "/v1/services/db/signal?signal=99",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/services/db/signal?signal=BOGUS",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/services/db/stop?dependents=maybe",
            400,
            "bad_request",
        ),
        ("GET", "/v1/events/history?limit=-1", 400, "bad_request"),
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/v1/services/dbb/definition", 404, "unknown_service"),
        ("DELETE", "/v1/services", 405, "method_not_allowed"),
    ] {
        let (got, body) = p.http(method, path);
        assert_eq!(got, status, "{method} {path}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{method} {path}: {body}"));
        assert_eq!(v["code"], code, "{method} {path}: {body}");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    // Happy paths of what the CLI does not cover.
    for path in [
        "/health",
        "/ready",
        "/openapi.json",
        "/v1/project",
        "/v1/services/db",
        "/v1/services/db/logs?tail=1",
        "/v1/events/history?limit=5",
    ] {
        let (status, body) = p.http("GET", path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    }
    // A unit's definition, in corral.toml's terms.
    let (_, def) = p.http("GET", "/v1/services/api/definition");
    let def: serde_json::Value = serde_json::from_str(&def).unwrap();
    let field = |k: &str| {
        def["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == k)
            .map(|f| f["value"].as_str().unwrap().to_string())
    };
    assert_eq!(def["kind"], "service", "{def}");
    assert_eq!(
        field("command").as_deref(),
        Some("trap '' USR1; echo api-up; exec sleep 1000")
    );
    assert_eq!(
        field("depends_on").as_deref(),
        Some("db (started)"),
        "{def}"
    );
    assert!(
        def["source"].as_str().unwrap().ends_with("corral.toml"),
        "{def}"
    );
    let (_, hist) = p.http("GET", "/v1/events/history?limit=50");
    assert!(hist.contains("api: started"), "{hist}");
    // Every event in the history carries the unit's typed state after it.
    let hist: serde_json::Value = serde_json::from_str(&hist).unwrap();
    let started = hist
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("api: started"))
        })
        .expect("the event");
    assert_eq!(started["kind"], "state", "{started}");
    assert_eq!(started["state"], "running", "{started}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(p.path().join(".corral/api.sock"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let out = ok(&p, &["down"]);
    assert!(out.contains("stopped"), "{out}");
    assert!(!p.path().join(".corral/daemon.pid").exists());
    p.assert_nothing_left();
    let (status, _, err) = p.run_client(&["ps"]);
    assert!(!status.success());
    assert!(
        err.contains("no corral is running") && err.contains("corral up -d"),
        "{err}"
    );
    // No corral: one exit code for every command that needs one (documented in --help).
    for args in [
        &["ps"][..],
        &["down"],
        &["stop", "db", "api"],
        &["tree"],
        &["why", "db"],
    ] {
        let (status, _, err) = p.run_client(args);
        assert_eq!(status.code(), Some(3), "corral {args:?}: {err}");
    }
    let (_, help, _) = p.run_client(&["--help"]);
    assert!(help.contains("3 no corral is running"), "{help}");
}

#[test]
fn a_stopped_service_stays_stopped_across_daemon_restarts() {
    let p = Project::new(TWO);
    ok(&p, &["up", "-d"]);
    wait_state(&p, "api", "running");
    ok(&p, &["stop", "api"]);
    wait_state(&p, "api", "inactive");
    ok(&p, &["down"]);
    p.assert_nothing_left();
    ok(&p, &["up", "-d"]);
    let list = wait_state(&p, "db", "running");
    let api = service(&list, "api");
    assert_eq!(api["state"], "inactive");
    assert_eq!(api["held"], true);
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

#[test]
fn a_stale_pid_file_is_cleaned_up() {
    let p = Project::new(TWO);
    std::fs::create_dir_all(p.path().join(".corral")).unwrap();
    // PID 1 with a start time it does not have: a reused PID, not our daemon.
    std::fs::write(p.path().join(".corral/daemon.pid"), "1 99999999999\n").unwrap();
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
    assert!(err.contains("stale PID file"), "{err}");
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

#[test]
fn after_kill_9_of_the_daemon_services_are_adopted_with_no_line_lost_or_repeated() {
    let p = Project::new(COUNTER);
    ok(&p, &["up", "-d"]);
    let list = wait_state(&p, "counter", "running");
    let pid = service(&list, "counter")["pid"].as_u64().unwrap();
    eventually(Duration::from_secs(10), "output", || {
        numbers(&p).len() > 200
    });

    p.kill_daemon();
    // With no daemon, the service keeps running and its output keeps reaching the file.
    let before = numbers(&p).len();
    eventually(
        Duration::from_secs(10),
        "output while the daemon is dead",
        || numbers(&p).len() > before + 200,
    );
    assert!(!is_dead(pid as i32));

    ok(&p, &["up", "-d"]);
    let list = wait_state(&p, "counter", "running");
    let c = service(&list, "counter");
    assert_eq!(c["pid"].as_u64(), Some(pid), "same process");
    assert_eq!(c["adopted"], true);
    let instances = p
        .processes()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("itertools"))
        .count();
    assert_eq!(instances, 1, "never a second instance");
    // The new daemon follows the output again.
    let followed = ok(&p, &["logs", "counter", "-n", "3"]);
    assert_eq!(followed.lines().count(), 3, "{followed}");

    // Its later exit is noticed, and the restart policy applies.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(Duration::from_secs(15), "restarted", || {
        let l = services(&p);
        let c = service(&l, "counter");
        is_up(c) && c["pid"].as_u64() != Some(pid)
    });
    ok(&p, &["down"]);
    p.assert_nothing_left();

    // Every line once, in order: the first instance counted 0..n without a gap or a repeat
    // across the daemon's death; the restarted one starts at 0 again.
    let all = numbers(&p);
    let restart = all
        .iter()
        .skip(1)
        .position(|n| *n == 0)
        .map(|i| i + 1)
        .unwrap_or(all.len());
    let first = &all[..restart];
    assert!(first.len() > 400, "{}", first.len());
    for (i, n) in first.iter().enumerate() {
        assert_eq!(*n, i as u64, "line {i} of the first instance is {n}");
    }
}

#[test]
fn tcp_api_needs_a_token_and_a_loopback_host() {
    use std::io::{Read, Write};
    let p = Project::new(TWO);
    ok(&p, &["up", "-d", "--listen", "127.0.0.1:0"]);
    let mut port = 0u16;
    eventually(Duration::from_secs(5), "listening", || {
        let log = p.read(".corral/daemon.log");
        port = log
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(' ').next()?.parse().ok())
            .unwrap_or(0);
        port != 0
    });
    let token = p.read(".corral/token");
    let read_only = p.read(".corral/token.read");
    assert_eq!(token.len(), 64);
    for f in [".corral/token", ".corral/token.read"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(p.path().join(f)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let req = |method: &str, path: &str, host: &str, auth: Option<&str>| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(
            !resp
                .to_ascii_lowercase()
                .contains("access-control-allow-origin"),
            "{resp}"
        );
        parse_http(&resp)
    };
    let host = format!("127.0.0.1:{port}");
    assert_eq!(req("GET", "/v1/services", &host, None).0, 401);
    assert_eq!(req("GET", "/v1/services", &host, Some("wrong")).0, 401);
    let mut almost = token.clone();
    almost.pop();
    almost.push('x');
    assert_eq!(req("GET", "/v1/services", &host, Some(&almost)).0, 401);
    assert_eq!(
        req(
            "GET",
            "/v1/services",
            &format!("evil.example:{port}"),
            Some(&token)
        )
        .0,
        403
    );
    assert_eq!(
        req("GET", "/v1/services", "127.0.0.1:1", Some(&token)).0,
        403
    );
    assert_eq!(req("GET", "/v1/services", &host, Some(&token)).0, 200);
    assert_eq!(
        req(
            "GET",
            "/v1/services",
            &format!("localhost:{port}"),
            Some(&read_only)
        )
        .0,
        200
    );
    let (status, body) = req("POST", "/v1/services/api/stop", &host, Some(&read_only));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read_only"));
    assert_eq!(
        req("POST", "/v1/services/api/stop", &host, Some(&token)).0,
        200
    );
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

fn pid_of(list: &serde_json::Value, name: &str) -> Option<u64> {
    list.as_array()?.iter().find(|s| s["name"] == name)?["pid"].as_u64()
}

#[test]
fn reload_restarts_only_what_changed() {
    let p = Project::new(&format!(
        "{TWO}\n[services.web]\ncommand = \"echo web-up; exec sleep 1000\"\ndepends_on = [\"api\"]\n"
    ));
    ok(&p, &["up", "-d"]);
    let list = wait_state(&p, "web", "running");
    let (db, api, web) = (
        pid_of(&list, "db").unwrap(),
        pid_of(&list, "api").unwrap(),
        pid_of(&list, "web").unwrap(),
    );
    assert_eq!(ok(&p, &["reload"]).trim(), "nothing changed");

    // api changes, web goes, cache comes.
    std::fs::write(
        p.path().join("corral.toml"),
        r#"
[services.db]
command = "echo db-up; exec sleep 1000"

[services.cache]
command = "echo cache-up; exec sleep 1000"

[services.api]
command = "echo api-v2; exec sleep 1000"
depends_on = ["db", "cache"]
"#,
    )
    .unwrap();
    let out = ok(&p, &["reload"]);
    assert!(
        out.contains("changed api; added cache; removed web"),
        "{out}"
    );
    let list = wait_state(&p, "api", "running");
    wait_state(&p, "cache", "running");
    let list2 = services(&p);
    assert_eq!(
        pid_of(&list2, "db"),
        Some(db),
        "unchanged db keeps its process"
    );
    assert_ne!(pid_of(&list, "api"), Some(api));
    assert!(!lists(&list2, "web"));
    eventually(Duration::from_secs(5), "web's process gone", || {
        is_dead(web as i32)
    });
    eventually(Duration::from_secs(10), "new api output", || {
        ok(&p, &["logs", "api"]).contains("api-v2")
    });

    // A broken file changes nothing and says where it is broken.
    std::fs::write(
        p.path().join("corral.toml"),
        "[services.db]\ncomand = \"x\"\n",
    )
    .unwrap();
    let (status, _, err) = p.run_client(&["reload"]);
    assert!(!status.success());
    assert!(
        err.contains("corral.toml:2:1") && err.contains("command"),
        "{err}"
    );
    assert_eq!(pid_of(&services(&p), "db"), Some(db));
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

#[test]
fn services_added_at_run_time_are_kept_updated_and_removed() {
    let p = Project::new(TWO);
    ok(&p, &["up", "-d"]);
    wait_state(&p, "api", "running");
    let extra = r#"{"name": "extra", "command": "echo extra-up; exec sleep 1000", "depends_on": ["db"], "env": {"GREETING": "hi \"there\""}}"#;
    let (status, body) = p.http_body("POST", "/v1/services", extra);
    assert_eq!(status, 201, "{body}");
    let list = wait_state(&p, "extra", "running");
    let first = pid_of(&list, "extra").unwrap();
    let env = std::fs::read(format!("/proc/{first}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&env).contains("GREETING=hi \"there\""));

    for (method, path, body, status, code) in [
        ("POST", "/v1/services", extra, 409, "conflict"),
        (
            "POST",
            "/v1/services",
            r#"{"name": "db", "command": "true"}"#,
            409,
            "conflict",
        ),
        ("DELETE", "/v1/services/db", "", 409, "conflict"),
        (
            "PUT",
            "/v1/services/nope",
            r#"{"command": "true"}"#,
            404,
            "unknown_service",
        ),
        ("POST", "/v1/services", "not json", 400, "bad_request"),
        ("POST", "/v1/services", "[1, 2]", 400, "bad_request"),
        (
            "POST",
            "/v1/services",
            r#"{"command": "true"}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name": "x", "command": null}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name": "x", "comand": "true"}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name": "x", "command": "true", "depends_on": ["nope"]}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name": "../x", "command": "true"}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name": "x\"]\n[services.y", "command": "true"}"#,
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/v1/services/extra",
            r#"{"name": "other", "command": "true"}"#,
            400,
            "bad_request",
        ),
    ] {
        let (got, answer) = p.http_body(method, path, body);
        assert_eq!(got, status, "{method} {path} {body}: {answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["code"], code, "{method} {path} {body}: {answer}");
    }
    let (_, answer) = p.http_body("POST", "/v1/services", r#"{"name": "x", "comand": "true"}"#);
    assert!(answer.contains("command"), "a suggestion: {answer}");
    // A definition's mistakes name its fields, not invented lines of corral.toml.
    let (status, answer) = p.http_body(
        "POST",
        "/v1/services",
        r#"{"name": "x", "command": "true", "restart": {"max_restarts": -1}}"#,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("field `restart.max_restarts`") && !answer.contains("corral.toml:"),
        "{answer}"
    );
    // corral.toml being edited (broken for now) does not stop a definition, and its unsaved
    // edits are not applied by it.
    let toml = p.read("corral.toml");
    std::fs::write(
        p.path().join("corral.toml"),
        format!("{toml}\n[services.half\ncommand = "),
    )
    .unwrap();
    let (status, answer) = p.http_body(
        "POST",
        "/v1/services",
        r#"{"name": "mid-edit", "command": ["sleep", "1000"]}"#,
    );
    assert_eq!(status, 201, "{answer}");
    assert!(!lists(&services(&p), "half"));
    std::fs::write(p.path().join("corral.toml"), toml).unwrap();
    let (status, answer) = p.http("DELETE", "/v1/services/mid-edit");
    assert_eq!(status, 200, "{answer}");

    // Update: restarted with the new definition.
    let (status, body) = p.http_body(
        "PUT",
        "/v1/services/extra",
        r#"{"command": "echo extra-v2; exec sleep 1000"}"#,
    );
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(15), "extra restarted", || {
        let l = services(&p);
        is_up(service(&l, "extra")) && pid_of(&l, "extra") != Some(first)
    });
    // The change after a removal starts from what is stored: the removed one stays gone.
    assert!(!lists(&services(&p), "mid-edit"));
    // Kept across a daemon restart.
    ok(&p, &["down"]);
    p.assert_nothing_left();
    ok(&p, &["up", "-d"]);
    wait_state(&p, "extra", "running");
    eventually(Duration::from_secs(10), "v2 output", || {
        ok(&p, &["logs", "extra"]).contains("extra-v2")
    });
    // Removed: stopped and gone, also after a restart.
    let (status, body) = p.http("DELETE", "/v1/services/extra");
    assert_eq!(status, 200, "{body}");
    assert!(!lists(&services(&p), "extra"));
    ok(&p, &["down"]);
    ok(&p, &["up", "-d"]);
    let list = wait_state(&p, "api", "running");
    assert!(!lists(&list, "extra"));
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

#[test]
fn a_dead_keeper_is_replaced_for_new_processes() {
    let p = Project::new(TWO);
    ok(&p, &["up", "-d"]);
    wait_state(&p, "api", "running");
    eventually(Duration::from_secs(10), "first output", || {
        ok(&p, &["logs", "db"]).contains("db-up")
    });
    let keeper = p.keeper_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(Duration::from_secs(5), "keeper gone", || is_dead(keeper));
    ok(&p, &["restart", "db"]);
    eventually(
        Duration::from_secs(10),
        "output of the restarted db",
        || ok(&p, &["logs", "db"]).matches("db-up").count() == 2,
    );
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// A keeper out of open files cannot take a new process's pipes: the daemon reads them
/// itself, so the service does not block once a pipe is full, and its output is kept — in its
/// log file and in `logs` — as if the keeper had it.
#[test]
fn pipes_the_keeper_cannot_take_are_read_by_the_daemon() {
    // 3,000 lines of ~100 bytes: four times what a pipe holds.
    let p = Project::new(
        r#"
[services.quiet]
command = ["sleep", "1000"]

[services.noisy]
command = ["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo \"line $i: ..........................................................................................\"; i=$((i+1)); done; echo noisy-done; exec sleep 1000"]
"#,
    );
    ok(&p, &["up", "-d", "quiet"]);
    wait_state(&p, "quiet", "running");
    let keeper = p.keeper_pid();
    // Not one descriptor to spare: the next pipes sent to it do not arrive.
    let open = std::fs::read_dir(format!("/proc/{keeper}/fd"))
        .unwrap()
        .count() as u64;
    let limit = nix::libc::rlimit {
        rlim_cur: open,
        rlim_max: open,
    };
    // SAFETY: sets the open-file limit of the keeper this test's corral started.
    let set = unsafe {
        nix::libc::prlimit(
            keeper,
            nix::libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
    ok(&p, &["start", "noisy"]);
    eventually(
        Duration::from_secs(20),
        "the noisy service past a full pipe",
        || ok(&p, &["logs", "noisy"]).contains("noisy-done"),
    );
    let log = p.read(".corral/logs/noisy.log");
    assert_eq!(log.matches(": ....").count(), 3000, "every line, once");
    assert!(
        log.contains("line 2999: "),
        "{}",
        &log[log.len().saturating_sub(300)..]
    );
    assert!(
        p.read(".corral/keeper.err").contains("did not arrive"),
        "the keeper says why"
    );
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// The daemon binds the keeper's socket and hands it over as the keeper's stdin (so it connects
/// at once); the socket is private. A keeper started again after one died binds its own (the
/// daemon's threads may be making files then: no process-wide umask for a moment).
#[test]
fn the_keeper_is_handed_its_socket() {
    let p =
        Project::new("[services.talker]\ncommand = \"echo hello from talker; exec sleep 1000\"\n");
    ok(&p, &["up", "-d"]);
    wait_state(&p, "talker", "running");
    let socket_of_stdin = |pid: i32| {
        let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
        stdin.to_string_lossy().starts_with("socket:")
    };
    let keeper = p.keeper_pid();
    assert!(socket_of_stdin(keeper));
    let mode = std::fs::metadata(p.dir.path().join(".corral/keeper.sock"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    eventually(Duration::from_secs(10), "the talker's line", || {
        ok(&p, &["logs", "talker"]).contains("hello from talker")
    });
    // A new keeper takes over when this one dies, on a socket of its own.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(Duration::from_secs(10), "a new keeper", || {
        p.processes()
            .iter()
            .any(|(pid, cmd)| cmd.contains("__keeper") && *pid != keeper)
    });
    assert!(!socket_of_stdin(p.keeper_pid()));
    ok(&p, &["restart", "talker"]);
    eventually(
        Duration::from_secs(10),
        "the restarted talker's line",
        || {
            ok(&p, &["logs", "talker"])
                .matches("hello from talker")
                .count()
                == 2
        },
    );
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

#[test]
fn foreground_up_serves_the_same_api() {
    let p = Project::new(TWO);
    let mut up = p.start(&["up"]);
    up.wait_for("api: started", Duration::from_secs(15));
    let list = wait_state(&p, "api", "running");
    assert!(service(&list, "db")["pid"].as_u64().is_some());
    // `up -d` refuses while a foreground corral runs the project.
    let (status, _, err) = p.run_client(&["up", "-d"]);
    assert!(!status.success());
    assert!(err.contains("already runs this project"), "{err}");
    ok(&p, &["down"]);
    assert!(up.wait(Duration::from_secs(15)).success());
    assert_no_leftovers(up.pid);
    p.assert_nothing_left();
}

#[test]
fn an_auto_port_is_kept_across_daemon_restarts() {
    let p = Project::new(
        r#"
[services.web]
command = ["python3", "tcp_server.py"]
ports = ["auto"]
readiness = { tcp = "127.0.0.1:{port}", interval = "50ms" }
"#,
    );
    ok(&p, &["up", "-d"]);
    let list = wait_state(&p, "web", "running");
    let port = service(&list, "web")["ports"][0].as_u64().unwrap();
    ok(&p, &["down"]);
    p.assert_nothing_left();
    ok(&p, &["up", "-d"]);
    let list = wait_state(&p, "web", "running");
    assert_eq!(service(&list, "web")["ports"][0].as_u64(), Some(port));
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

#[test]
fn a_corrupt_state_database_is_a_clear_error() {
    let p = Project::new(TWO);
    std::fs::create_dir_all(p.path().join(".corral")).unwrap();
    std::fs::write(p.path().join(".corral/state.db"), vec![b'x'; 8192]).unwrap();
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(!status.success(), "{out}");
    assert!(
        err.contains("not a corral state database") && err.contains("help:"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    p.assert_nothing_left();
}

#[test]
fn events_of_a_unit_removed_by_a_reload_are_ignored() {
    // `busy` has probes and timers in flight all the time; once it is removed, they must not
    // reach a unit that moved into its place, nor a place that is gone (while somebody
    // follows the events).
    let p = Project::new(
        r#"
[services.keep]
command = "exec sleep 1000"

[services.busy]
command = "exec sleep 1000"
liveness = { exec = ["true"], interval = "20ms" }
readiness = { exec = ["true"], interval = "20ms" }
"#,
    );
    ok(&p, &["up", "-d"]);
    let _events = p.start(&["events"]);
    wait_state(&p, "busy", "running");
    let keep = pid_of(&wait_state(&p, "keep", "running"), "keep");
    std::fs::write(
        p.path().join("corral.toml"),
        "[services.keep]\ncommand = \"exec sleep 1000\"\n",
    )
    .unwrap();
    let out = ok(&p, &["reload"]);
    assert!(out.contains("removed busy"), "{out}");
    // Long enough for every timer armed before the reload to fire.
    std::thread::sleep(Duration::from_millis(300));
    let list = services(&p);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(pid_of(&list, "keep"), keep);
    assert!(is_up(service(&list, "keep")));
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

#[test]
fn every_route_in_the_table_is_served_and_documented() {
    // The table is what the router registers; the document must list exactly it (unit test in
    // corral-api). Here: each entry reaches a handler of the running daemon — not the "no such
    // route" fallback, not "method not allowed".
    let p = Project::new(TWO);
    ok(&p, &["up", "-d"]);
    wait_state(&p, "api", "running");
    let mut table = corral_api::table();
    // Last: it ends the daemon.
    table.sort_by_key(|(m, path)| (*path == "/v1/shutdown", *m, *path));
    assert!(table.len() >= 35, "{table:?}");
    for (method, path) in table {
        let path = path
            .replace("{name}", "no-such-unit")
            .replace("{id}", "no-such-id");
        // An unknown query parameter or a body that is not JSON: handlers refuse before they
        // change anything (what takes neither answers harmlessly).
        let (status, body) =
            p.http_body(&method.to_uppercase(), &format!("{path}?probe-only=1"), "{");
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(
            !(status == 404 && body.contains("no such route")),
            "{method} {path} is in the table but not routed: {body}"
        );
    }
    p.assert_nothing_left();
}

/// `start`/`stop`/`restart` take several names, `--all` (the daemon stays) and `--namespace`;
/// a wrong name among several is reported and the rest are still acted on.
#[test]
fn start_stop_and_restart_take_several_names_all_or_a_namespace() {
    let p = Project::new(
        r#"
[services.db]
command = "exec sleep 1000"
namespace = "data"

[services.cache]
command = "exec sleep 1000"
namespace = "data"

[services.api]
command = "exec sleep 1000"
depends_on = ["db"]
"#,
    );
    ok(&p, &["up", "-d"]);
    for name in ["db", "cache", "api"] {
        wait_state(&p, name, "running");
    }
    let out = ok(&p, &["stop", "cache", "api", "--wait"]);
    assert!(out.contains("cache") && out.contains("api"), "{out}");
    wait_state(&p, "api", "inactive");
    wait_state(&p, "cache", "inactive");
    assert!(in_state(service(&services(&p), "db"), "running"));

    let (status, _, err) = p.run_client(&["start", "cache", "nope", "--wait"]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("`nope`"), "{err}");
    wait_state(&p, "cache", "running");

    ok(&p, &["stop", "--namespace", "data", "--wait"]);
    wait_state(&p, "db", "inactive");
    wait_state(&p, "cache", "inactive");
    let (status, _, err) = p.run_client(&["stop", "--namespace", "nothing"]);
    assert!(!status.success());
    assert!(err.contains("no unit is in namespace `nothing`"), "{err}");

    ok(&p, &["start", "--all", "--wait"]);
    for name in ["db", "cache", "api"] {
        wait_state(&p, name, "running");
    }
    ok(&p, &["stop", "--all", "--wait"]);
    for name in ["db", "cache", "api"] {
        wait_state(&p, name, "inactive");
    }
    // The daemon is still there to start them again.
    ok(&p, &["restart", "db", "api", "--wait"]);
    wait_state(&p, "api", "running");
    let (status, _, err) = p.run_client(&["stop"]);
    assert!(!status.success());
    assert!(err.contains("--all"), "{err}");
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// `--json` on the commands that read: what the API answers, parsed here, with its field names.
#[test]
fn read_commands_print_json_with_the_apis_field_names() {
    let p = Project::new(
        r#"
[services.db]
command = "exec sleep 1000"

[services.api]
command = "exec sleep 1000"
depends_on = ["db"]

[templates.box]
command = ["sleep", "1000"]
"#,
    );
    ok(&p, &["up", "-d"]);
    wait_state(&p, "api", "running");
    let json = |args: &[&str]| -> serde_json::Value {
        let out = ok(&p, args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("corral {args:?}: {e}: {out}"))
    };
    let why = json(&["why", "api", "--json"]);
    assert_eq!(why["name"], "api");
    assert_eq!(why["depends_on"][0]["name"], "db", "{why}");
    let tree = json(&["tree", "--json"]);
    assert_eq!(tree.as_array().unwrap().len(), 2, "{tree}");
    let top = json(&["top", "-n", "1", "--json"]);
    assert!(top[0]["usage"].is_object(), "{top}");
    let made = ok(&p, &["instance", "create", "box"]);
    let name = made.split_whitespace().next().unwrap().to_string();
    let list = json(&["instance", "ls", "--json"]);
    assert_eq!(list[0]["name"], name.as_str(), "{list}");
    let one = json(&["instance", "show", &name, "--json"]);
    assert_eq!(one["template"], "box", "{one}");
    let id = ok(&p, &["exec", "-d", "--", "sh", "-c", "echo out"])
        .trim()
        .to_string();
    let waited = json(&["proc", "wait", &id, "--json"]);
    assert_eq!(waited["exit_code"], 0, "{waited}");
    let shown = json(&["proc", "show", &id, "--json"]);
    assert!(
        shown["output"]["head"].as_str().unwrap().contains("out"),
        "{shown}"
    );
    // `events --json` follows: its first line (from the history) is an event object.
    let mut ev = std::process::Command::new(BIN)
        .args(["events", "-n", "3", "--json"])
        .current_dir(p.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = ev.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an event line");
    let _ = ev.kill();
    let _ = ev.wait();
    let e: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(e["kind"].is_string() && e["time_ms"].is_u64(), "{e}");
    ok(&p, &["down"]);
    p.assert_nothing_left();
}

/// Colour: off when the output is not a terminal (as in every other test here); `--color
/// always` colours `ps`'s states, `logs`' names and errors; `--color never` never does.
#[test]
fn colour_is_chosen_with_color_and_off_by_default_off_a_terminal() {
    let p = Project::new("[services.db]\ncommand = \"echo hi; exec sleep 1000\"\n");
    ok(&p, &["up", "-d"]);
    wait_state(&p, "db", "running");
    let plain = ok(&p, &["ps"]);
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    let coloured = ok(&p, &["ps", "--color", "always"]);
    assert!(coloured.contains("\u{1b}[32mrunning"), "{coloured:?}");
    let tree = ok(&p, &["tree", "--color", "always"]);
    assert!(tree.contains("db: \u{1b}[32mrunning"), "{tree:?}");
    eventually(Duration::from_secs(10), "db's line", || {
        ok(&p, &["logs", "--color", "always"]).contains("\u{1b}[")
    });
    let never = ok(&p, &["logs", "--color", "never"]);
    assert!(
        never.contains("db | hi") && !never.contains('\u{1b}'),
        "{never:?}"
    );
    let (_, _, err) = p.run_client(&["why", "nope", "--color", "always"]);
    assert!(err.contains("\u{1b}[1m\u{1b}[31merror:"), "{err:?}");
    ok(&p, &["down"]);
    p.assert_nothing_left();
}
