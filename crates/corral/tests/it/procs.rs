//! Ad-hoc processes over the API and `corral exec` / `corral proc`.

use std::time::{Duration, Instant};

use crate::harness::*;

const ONE: &str = "[services.db]\ncommand = \"exec sleep 1000\"\n";

fn json(p: &Project, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = p.http_body(method, path, body);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
    (status, v)
}

fn up(p: &Project) {
    let (status, out, err) = p.run_client(&["up", "-d"]);
    assert!(status.success(), "{out}{err}");
}

fn down(p: &Project) {
    let (status, out, err) = p.run_client(&["down"]);
    assert!(status.success(), "{out}{err}");
    p.assert_nothing_left();
}

#[test]
fn exec_streams_output_and_exits_with_the_code() {
    let p = Project::new(ONE);
    up(&p);
    let (status, out, err) = p.run_client(&[
        "exec",
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 7",
    ]);
    assert_eq!(status.code(), Some(7), "{out}{err}");
    assert_eq!(out, "to-out\n");
    assert_eq!(err, "to-err\n");
    let (status, out, _) = p.run_client(&["exec", "--timeout", "200ms", "--", "sleep", "100"]);
    assert_eq!(status.code(), Some(128 + 15), "{out}");
    // Detached: the process outlives the client that started it.
    let (status, out, _) = p.run_client(&[
        "exec",
        "-d",
        "-e",
        "WHO=corral",
        "--",
        "sh",
        "-c",
        "echo hi $WHO; exec sleep 100",
    ]);
    assert!(status.success());
    let id = out.trim().to_string();
    let (_, v) = json(&p, "GET", &format!("/v1/procs/{id}"), "");
    assert_eq!(v["state"], "running");
    eventually(Duration::from_secs(5), "output", || {
        json(&p, "GET", &format!("/v1/procs/{id}"), "").1["output"]["head"] == "hi corral\n"
    });
    down(&p);
}

#[test]
fn the_api_keeps_head_and_tail_waits_with_a_cap_and_takes_input() {
    let p = Project::new(ONE);
    up(&p);
    // 100,000 bytes of output: 100 kept at the head, 50 at the tail, the rest counted.
    let body = r#"{"command": ["python3", "-c", "import sys; sys.stdout.write('h' * 100 + 'm' * 99850 + 't' * 50)"], "head_bytes": 100, "tail_bytes": 50}"#;
    let (status, v) = json(&p, "POST", "/v1/procs", body);
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (_, v) = json(&p, "GET", &format!("/v1/procs/{id}/wait?timeout=20s"), "");
    assert_eq!(v["state"], "exited", "{v}");
    assert_eq!(v["exit_code"], 0);
    let o = &v["output"];
    assert_eq!(o["original_bytes"], 100_000);
    assert_eq!(o["retained_bytes"], 150);
    assert_eq!(o["omitted_bytes"], 99_850);
    assert_eq!(o["head"], "h".repeat(100));
    assert_eq!(o["tail"], "t".repeat(50));

    // Wait with a cap on a process that never exits: it answers after the cap, still running.
    let (_, v) = json(
        &p,
        "POST",
        "/v1/procs",
        r#"{"command": "exec sleep 1000", "key": "sleeper"}"#,
    );
    let sleeper = v["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    let (status, v) = json(
        &p,
        "GET",
        &format!("/v1/procs/{sleeper}/wait?timeout=300ms"),
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(v["state"], "running");
    assert!(t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(10));
    // The same key is the same process.
    let (status, v) = json(
        &p,
        "POST",
        "/v1/procs",
        r#"{"command": "exec sleep 1000", "key": "sleeper"}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(v["id"], sleeper.as_str());
    let (status, v) = json(&p, "DELETE", &format!("/v1/procs/{sleeper}"), "");
    assert_eq!((status, v["code"].as_str()), (409, Some("conflict")));
    let (status, v) = json(
        &p,
        "POST",
        &format!("/v1/procs/{sleeper}/signal?signal=KILL"),
        "",
    );
    assert_eq!(status, 200, "{v}");
    let (_, v) = json(
        &p,
        "GET",
        &format!("/v1/procs/{sleeper}/wait?timeout=10s"),
        "",
    );
    assert_eq!(
        (v["state"].as_str(), v["signal"].as_i64()),
        (Some("killed"), Some(9))
    );
    let (status, _) = json(&p, "POST", &format!("/v1/procs/{sleeper}/signal"), "");
    assert_eq!(status, 409);

    // Input, then close: cat echoes and ends.
    let (_, v) = json(
        &p,
        "POST",
        "/v1/procs",
        r#"{"command": ["cat"], "stdin": "first\n"}"#,
    );
    let cat = v["id"].as_str().unwrap().to_string();
    let (status, _) = json(
        &p,
        "POST",
        &format!("/v1/procs/{cat}/input"),
        r#"{"data": "second\n", "close": true}"#,
    );
    assert_eq!(status, 200);
    let (_, v) = json(&p, "GET", &format!("/v1/procs/{cat}/wait?timeout=10s"), "");
    assert_eq!(v["output"]["head"], "first\nsecond\n");
    // Waiting on one that has ended answers at once.
    let t = Instant::now();
    let (_, v) = json(&p, "GET", &format!("/v1/procs/{cat}/wait?timeout=10s"), "");
    assert_eq!(v["state"], "exited");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let (status, v) = json(
        &p,
        "POST",
        &format!("/v1/procs/{cat}/input"),
        r#"{"data": "late"}"#,
    );
    assert_eq!(status, 409, "{v}");

    // A timeout terminates the group; the record says so.
    let (_, v) = json(
        &p,
        "POST",
        "/v1/procs",
        r#"{"command": "sleep 100", "timeout": "200ms", "grace": "1s"}"#,
    );
    let slow = v["id"].as_str().unwrap().to_string();
    let (_, v) = json(&p, "GET", &format!("/v1/procs/{slow}/wait?timeout=10s"), "");
    assert_eq!(v["timed_out"], true, "{v}");
    assert_eq!(v["state"], "killed");

    // Listing: running first, then newest.
    let (_, v) = json(&p, "POST", "/v1/procs", r#"{"command": "exec sleep 1000"}"#);
    let running = v["id"].as_str().unwrap().to_string();
    let (_, list) = json(&p, "GET", "/v1/procs", "");
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], running);
    assert_eq!(ids[1], slow);
    let (status, v) = json(&p, "DELETE", "/v1/procs", "");
    assert_eq!(status, 200);
    assert!(v["message"].as_str().unwrap().contains("removed 4"), "{v}");
    down(&p);
}

#[test]
fn ended_processes_are_dropped_after_their_retention() {
    let p = Project::new(ONE);
    up(&p);
    let (_, v) = json(
        &p,
        "POST",
        "/v1/procs",
        r#"{"command": "true", "retain": "200ms"}"#,
    );
    let id = v["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "dropped", || {
        p.http("GET", &format!("/v1/procs/{id}")).0 == 404
    });
    down(&p);
}

#[test]
fn bad_process_requests_are_refused_with_reasons() {
    let p = Project::new(ONE);
    up(&p);
    for (method, path, body, status) in [
        ("POST", "/v1/procs", "", 400),
        ("POST", "/v1/procs", "{}", 400),
        ("POST", "/v1/procs", r#"{"command": 5}"#, 400),
        ("POST", "/v1/procs", r#"{"command": []}"#, 400),
        ("POST", "/v1/procs", r#"{"command": ["a", 1]}"#, 400),
        ("POST", "/v1/procs", r#"{"command": "  "}"#, 400),
        (
            "POST",
            "/v1/procs",
            r#"{"command": "true", "bogus": 1}"#,
            400,
        ),
        (
            "POST",
            "/v1/procs",
            r#"{"command": "true", "timeout": "soon"}"#,
            400,
        ),
        (
            "POST",
            "/v1/procs",
            r#"{"command": "true", "cwd": "../.."}"#,
            400,
        ),
        (
            "POST",
            "/v1/procs",
            r#"{"command": "true", "cwd": "nope"}"#,
            400,
        ),
        (
            "POST",
            "/v1/procs",
            r#"{"command": ["no-such-program-here"]}"#,
            400,
        ),
        (
            "POST",
            "/v1/procs",
            r#"{"command": "true", "env": {"A=B": "x"}}"#,
            400,
        ),
        (
            "POST",
            "/v1/procs",
            r#"{"command": "true", "head_bytes": 999999999999}"#,
            400,
        ),
        ("GET", "/v1/procs/p999", "", 404),
        ("GET", "/v1/procs/p999/wait", "", 404),
        ("POST", "/v1/procs/p999/input", r#"{"data": "x"}"#, 404),
        ("GET", "/v1/procs/p1/wait?timeout=1h", "", 400),
    ] {
        let (got, v) = json(&p, method, path, body);
        assert_eq!(got, status, "{method} {path} {body}: {v}");
        assert!(!v["message"].as_str().unwrap_or_default().is_empty(), "{v}");
    }
    // A mistyped id is answered with the id that was likely meant.
    let (status, out, err) = p.run_client(&["exec", "-d", "--key", "job-7", "--", "sleep", "100"]);
    assert!(status.success(), "{out}{err}");
    let id = out.trim().to_string();
    let bare = id.trim_start_matches('p');
    for (asked, hint) in [
        (bare.to_string(), format!("did you mean `{id}`?")),
        (id.to_uppercase(), format!("did you mean `{id}`?")),
        ("job-7".to_string(), format!("did you mean `{id}`?")),
        ("zzz".to_string(), "`corral proc ls` lists them".to_string()),
    ] {
        let (status, out, err) = p.run_client(&["proc", "show", &asked]);
        assert!(!status.success(), "{asked}: {out}");
        assert!(
            err.contains(&format!("no process with id `{asked}`")) && err.contains(&hint),
            "{asked}: {err}"
        );
    }
    down(&p);
}

#[test]
fn a_new_daemon_ends_what_a_crashed_one_left_running() {
    let p = Project::new(ONE);
    up(&p);
    let (_, v) = json(&p, "POST", "/v1/procs", r#"{"command": "exec sleep 1000"}"#);
    let pid = v["pid"].as_u64().unwrap() as i32;
    p.kill_daemon();
    assert!(
        !is_dead(pid),
        "the ad-hoc process outlived the daemon for now"
    );
    up(&p);
    eventually(Duration::from_secs(10), "left-over process ended", || {
        is_dead(pid)
    });
    down(&p);
}

#[test]
fn the_event_stream_carries_unit_and_process_events() {
    let p = Project::new(ONE);
    up(&p);
    eventually(Duration::from_secs(10), "db running", || {
        is_up(&json(&p, "GET", "/v1/services/db", "").1)
    });
    let events = p.start(&["events", "-n", "20"]);
    // The history comes first.
    events.wait_for("db: started", Duration::from_secs(10));
    let (status, out, _) = p.run_client(&["exec", "--", "sh", "-c", "exit 4"]);
    assert_eq!(status.code(), Some(4), "{out}");
    let (status, _, _) = p.run_client(&["stop", "db"]);
    assert!(status.success());
    let out = events.wait_for("db: stopped", Duration::from_secs(10));
    assert!(out.contains("proc p1: started `sh -c exit 4`"), "{out}");
    assert!(out.contains("proc p1: exit code 4"), "{out}");
    drop(events);
    down(&p);
}

/// (event, data) of a server-sent event stream read to its end.
fn sse_events(text: &str) -> Vec<(String, serde_json::Value)> {
    let mut events = Vec::new();
    let mut kind = String::new();
    for line in text.lines() {
        if let Some(k) = line.strip_prefix("event: ") {
            kind = k.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            events.push((kind.clone(), v));
        }
    }
    events
}

/// The output lines of a stream's events and its exit record, checked against what the
/// command below writes.
fn assert_output_then_exit(events: &[(String, serde_json::Value)], text: &str) {
    let lines: Vec<(String, String)> = events
        .iter()
        .filter(|(k, _)| k == "line")
        .map(|(_, v)| {
            (
                v["stream"].as_str().unwrap().into(),
                v["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    let out: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| s == "out")
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(out, ["a", "b", "c"], "{text}");
    assert!(lines.contains(&("err".into(), "e1".into())), "{text}");
    let (last, exit) = events.last().unwrap();
    assert_eq!(last, "exit");
    assert_eq!(exit["exit_code"], 0);
}

#[test]
fn the_output_stream_has_one_event_per_line_then_the_exit() {
    let p = Project::new(ONE);
    up(&p);
    let body = r#"{"command": "printf 'a\nb\n'; echo e1 >&2; sleep 0.2; printf 'c'"}"#;
    let (_, v) = json(&p, "POST", "/v1/procs", body);
    let id = v["id"].as_str().unwrap().to_string();
    // The stream ends after the `exit` event, so reading to the end is bounded by the process.
    let (status, text) = p.http("GET", &format!("/v1/procs/{id}/output"));
    assert_eq!(status, 200, "{text}");
    assert_output_then_exit(&sse_events(&text), &text);

    // Started and followed in one request: the record first, then the same stream.
    let (status, text) = p.http_body("POST", "/v1/procs?follow=true", body);
    assert_eq!(status, 200, "{text}");
    let events = sse_events(&text);
    let (first, record) = &events[0];
    assert_eq!(first, "proc", "{text}");
    let id = record["id"].as_str().unwrap();
    assert_eq!(events.last().unwrap().1["id"], id, "{text}");
    assert_output_then_exit(&events, &text);
    let (status, v) = json(&p, "POST", "/v1/procs?follow=maybe", body);
    assert_eq!(status, 400, "{v}");
    down(&p);
}

/// `corral exec` newer than the daemon it talks to: a daemon of an earlier version answers the
/// start with the record (it does not know `follow`), and exec asks for the output in a second
/// request instead of losing it. The daemon here is a stand-in on the project's socket that
/// answers those two requests as such a daemon did.
#[test]
fn exec_asks_for_the_output_when_the_daemon_answers_the_start_with_a_record() {
    use std::io::{BufRead, BufReader, Read, Write};
    let p = Project::new(ONE);
    let state = p.path().join(".corral");
    std::fs::create_dir_all(&state).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(state.join("api.sock")).unwrap();
    let record = |state: &str, exit_code: Option<i32>| {
        serde_json::json!({
            "id": "p1", "key": null, "command": "echo hi", "pid": 1, "state": state,
            "exit_code": exit_code, "signal": null, "timed_out": false, "started_ms": 0,
            "ended_ms": null,
            "output": {"head": "", "tail": "", "original_bytes": 0, "retained_bytes": 0,
                       "omitted_bytes": 0}
        })
        .to_string()
    };
    let answers = [
        ("201 Created", "application/json", record("running", None)),
        (
            "200 OK",
            "text/event-stream",
            format!(
                "event: line\ndata: {{\"stream\":\"out\",\"text\":\"hi\"}}\n\nevent: exit\ndata: {}\n\n",
                record("exited", Some(3))
            ),
        ),
    ];
    let server = std::thread::spawn(move || {
        let mut asked = Vec::new();
        for (status, kind, body) in answers {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream);
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut sent = vec![0; length];
            reader.read_exact(&mut sent).unwrap();
            write!(
                reader.get_mut(),
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            asked.push(first.trim_end().to_string());
        }
        asked
    });
    let (status, out, err) = p.run_client(&["exec", "--", "echo", "hi"]);
    assert_eq!(status.code(), Some(3), "{out}{err}");
    assert_eq!(out, "hi\n", "{err}");
    let asked = server.join().unwrap();
    assert_eq!(
        asked,
        [
            "POST /v1/procs?follow=true HTTP/1.1",
            "GET /v1/procs/p1/output HTTP/1.1"
        ]
    );
}
